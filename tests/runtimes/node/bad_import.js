require('no_such_module_anywhere'); // an init error on purpose
exports.handler = async (event) => event;
