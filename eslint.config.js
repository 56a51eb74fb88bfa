// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

// Layer arrows (STYLE.md §1): protocol <- crypto <- core; protocol <- transports <- testkit.
// core never imports a transport and a transport never imports core.
const TRANSPORTS = [
  "@nuropb/transport-memory",
  "@nuropb/transport-amqp",
  "@nuropb/transport-nats",
  "@nuropb/transport-redis",
];
const layer = (files, forbidden) => ({
  files,
  rules: {
    "no-restricted-imports": [
      "error",
      {
        paths: forbidden.map((name) => ({
          name,
          message: "This import crosses a layer boundary (STYLE.md §1).",
        })),
        patterns: [
          {
            group: ["**/src/**", "**/dist/**", "../../*/src/*"],
            message: "Import sibling packages by name.",
          },
        ],
      },
    ],
  },
});

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**", "**/.turbo/**", "**/test/fixtures/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ["*.js", "*.ts", "packages/*/bin/*.js"] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/switch-exhaustiveness-check": [
        "error",
        { considerDefaultExhaustiveForUnions: true },
      ],
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_" },
      ],
      "@typescript-eslint/no-explicit-any": "error",
      "no-console": "error",
    },
  },
  {
    // Tests, examples, benchmarks and the integration harness are type-checked by tsconfig.test.json.
    files: [
      "packages/*/test/**/*.ts",
      "integration-tests/**/*.ts",
      "bench/**/*.ts",
      "examples/**/*.ts",
      "vitest.config.ts",
    ],
    languageOptions: {
      parserOptions: { projectService: false, project: ["./tsconfig.test.json"] },
    },
  },
  {
    files: [
      "**/test/**",
      "integration-tests/**",
      "bench/**",
      "examples/**",
      "packages/cli/**",
      "**/*.config.*",
    ],
    rules: { "no-console": "off" },
  },
  {
    // Pages a package serves to browsers as they are (the gateway's mesh explorer): plain
    // JavaScript, no build, so no type information.
    files: ["packages/*/assets/**/*.js"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      sourceType: "module",
      globals: {
        window: "readonly",
        document: "readonly",
        fetch: "readonly",
        URL: "readonly",
        WebSocket: "readonly",
        setTimeout: "readonly",
      },
    },
  },
  layer(
    ["packages/protocol/src/**"],
    ["@nuropb/core", "@nuropb/crypto", "@nuropb/transport-testkit", ...TRANSPORTS],
  ),
  layer(["packages/crypto/src/**"], ["@nuropb/core", "@nuropb/transport-testkit", ...TRANSPORTS]),
  layer(["packages/core/src/**"], ["@nuropb/transport-testkit", ...TRANSPORTS]),
  // The testkit is a test tool at the top of the graph: its core suite drives @nuropb/core over a
  // transport, so it alone may import core and crypto.
  layer(["packages/transport-{memory,amqp,nats,redis}/src/**"], ["@nuropb/core", "@nuropb/crypto"]),
);
