export * from './schema.js'
export * from './validate.js'
export * from './config.js'
export * from './topology.js'
