// Parse and validate a settings object with defaults.

export interface Settings {
  host: string;
  port: number;
  retries: number;
  verbose: boolean;
  tags: string[];
}

const DEFAULTS: Settings = {
  host: "localhost",
  port: 8080,
  retries: 3,
  verbose: false,
  tags: [],
};

export class SettingsError extends Error {
  constructor(public readonly field: string, message: string) {
    super(`${field}: ${message}`);
  }
}

function asNumber(value: unknown, field: string, min: number, max: number): number {
  const n = typeof value === "string" ? Number(value) : value;
  if (typeof n !== "number" || Number.isNaN(n)) {
    throw new SettingsError(field, "not a number");
  }
  if (n < min || n > max) {
    throw new SettingsError(field, `must be within ${min}..${max}`);
  }
  return n;
}

export function parseSettings(raw: Record<string, unknown>): Settings {
  const out: Settings = { ...DEFAULTS, tags: [...DEFAULTS.tags] };
  for (const [key, value] of Object.entries(raw)) {
    switch (key) {
      case "host":
        out.host = String(value);
        break;
      case "port":
        out.port = asNumber(value, key, 1, 65535);
        break;
      case "retries":
        out.retries = asNumber(value, key, 0, 10);
        break;
      case "verbose":
        out.verbose = value === true || value === "true";
        break;
      case "tags":
        out.tags = Array.isArray(value) ? value.map(String) : String(value).split(",");
        break;
      default:
        throw new SettingsError(key, "unknown setting");
    }
  }
  return out;
}

export function describe(settings: Settings): string {
  const lines = Object.entries(settings).map(([key, value]) => `${key} = ${JSON.stringify(value)}`);
  return lines.join("\n");
}
