exports.handler = async (event) => ({ deep: event });
