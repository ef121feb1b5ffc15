import tseslint from 'typescript-eslint';

/**
 * Type-aware checks TypeScript itself does not make, for promises: an async store call whose result is
 * dropped (a write that may fail unseen) or tested as a value (`if (!hasSecret(…))` on a promise is always
 * false). `npm run lint`; CI runs it.
 */
export default [
  {
    files: ['src/**/*.ts', 'bench/**/*.ts'],
    ignores: ['src/web/app/**'],
    languageOptions: { parser: tseslint.parser, parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
    },
  },
];
