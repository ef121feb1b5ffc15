export * from './paths.js';
export * from './gzip.js';
export * from './tar.js';
export * from './layout.js';
