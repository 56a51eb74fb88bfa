/** The instrumentation scope of our tracers and meters. */
export const INSTRUMENTATION_NAME = "@nuropb/opentelemetry";
export const INSTRUMENTATION_VERSION = "0.1.0";

/**
 * Checks that `options` is a plain object with only `known` keys.
 * @throws TypeError naming the unknown key.
 */
export function checkOptions(
  options: unknown,
  where: string,
  known: readonly string[],
): Record<string, unknown> {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`${where}: options must be an object`);
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new TypeError(`${where}: unknown option '${key}' (known: ${known.join(", ")})`);
    }
  }
  return options as Record<string, unknown>;
}
