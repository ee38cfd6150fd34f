export const handler = async (event, context) => ({ esm: event, rid: context.awsRequestId });
