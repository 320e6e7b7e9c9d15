// Pure functions from settings to what the language client needs (no `vscode` import, so the
// protocol test can use exactly what the extension sends).
import * as os from "node:os";
import * as path from "node:path";

import { SERVER_SETTING_DEFAULTS, SERVER_SETTING_NAMES } from "./serverSettings";

export { SERVER_SETTING_DEFAULTS, SERVER_SETTING_NAMES };

/** Reads one `canvas.<name>` setting; undefined when unset (then the extension default is used). */
export type SettingReader = (name: string) => unknown;

/**
 * The server settings the extension sends as `initializationOptions` and in
 * `workspace/didChangeConfiguration`: every server setting (flat, camelCase names), with the
 * extension's defaults (liveCanvas: true) where the user set nothing. Client-only settings
 * (serverPath, serverArgs, trace) are never sent: the server would report them as unknown.
 */
export function buildInitializationOptions(read: SettingReader): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const name of SERVER_SETTING_NAMES) {
    const value = read(name);
    out[name] = value === undefined || value === null ? SERVER_SETTING_DEFAULTS[name] : value;
  }
  return out;
}

/** Languages the server has grammars for (VS Code language ids). */
export const LANGUAGES: readonly string[] = [
  "python",
  "javascript",
  "javascriptreact",
  "typescript",
  "typescriptreact",
  "go",
  "rust",
  "lua",
];

/** The client's document selector: those languages in files and untitled editors. */
export function documentSelector(): { scheme: string; language: string }[] {
  return LANGUAGES.flatMap((language) => [
    { scheme: "file", language },
    { scheme: "untitled", language },
  ]);
}

export interface ServerCommand {
  command: string;
  args: string[];
}

/**
 * The command that starts the server. `serverPath` may be a name on PATH (no slash), or a path with
 * `~` or `${workspaceFolder}`; a relative path is resolved against the first workspace folder.
 */
export function resolveServerCommand(
  serverPath: unknown,
  serverArgs: unknown,
  workspaceFolder: string | undefined,
  home: string = os.homedir(),
): ServerCommand {
  let command = typeof serverPath === "string" && serverPath.trim() ? serverPath.trim() : "canvas-ls";
  if (workspaceFolder) command = command.split("${workspaceFolder}").join(workspaceFolder);
  if (command === "~" || command.startsWith("~/")) command = path.join(home, command.slice(1));
  if (command.includes("/") && !path.isAbsolute(command) && workspaceFolder) {
    command = path.resolve(workspaceFolder, command);
  }
  const args =
    Array.isArray(serverArgs) && serverArgs.every((a) => typeof a === "string")
      ? (serverArgs as string[]).map((a) => (workspaceFolder ? a.split("${workspaceFolder}").join(workspaceFolder) : a))
      : ["serve"];
  return { command, args };
}

/** What the status bar shows for a canvas.status answer (and the local busy / step state). */
export interface ServerStatus {
  version?: string;
  model?: string | null;
  device?: string | null;
  dtype?: string | null;
  randomWeights?: boolean | null;
  busy?: boolean;
  error?: string | null;
  warmingUp?: boolean | null; // the model's warm-up (compile, timing) still runs: fills are eager meanwhile
  threads?: string | null; // the in-process model's CPU threads: "auto (2 cores, 2 last)", or a fixed count
}

export interface StatusView {
  text: string;
  tooltip: string;
  kind: "ok" | "busy" | "loading" | "error" | "stopped";
}

export function statusView(
  status: ServerStatus | undefined,
  state: { running: boolean; busy: boolean; step?: { step: number; maxSteps: number } },
): StatusView {
  if (!state.running) {
    return { text: "$(circle-slash) canvas-ls", tooltip: "canvas-ls: the server is not running (Canvas: Show Server Log)", kind: "stopped" };
  }
  if (status?.error) {
    return { text: "$(error) canvas-ls", tooltip: `canvas-ls: ${status.error}`, kind: "error" };
  }
  const where = status?.model ? `${status.model} · ${status.device ?? "?"}` : "";
  const lines = [
    `canvas-ls ${status?.version ?? ""}`.trim(),
    status?.model ? `model: ${status.model}${status.randomWeights ? " (random weights: fills are noise)" : ""}` : "model: loading…",
    status?.device ? `device: ${status.device}${status.dtype ? `, ${status.dtype}` : ""}` : "",
    status?.threads ? `CPU threads: ${status.threads}` : "",
    status?.warmingUp ? "warming up (compiling in the pauses between fills; fills meanwhile run eager)" : "",
  ].filter(Boolean);
  if (state.busy || status?.busy) {
    const step = state.step ? ` ${state.step.step}/${state.step.maxSteps}` : "";
    return { text: `$(loading~spin) canvas-ls: filling…${step}`, tooltip: lines.join("\n"), kind: "busy" };
  }
  if (!status?.model) {
    return { text: "$(loading~spin) canvas-ls: loading model", tooltip: lines.join("\n"), kind: "loading" };
  }
  return { text: `$(sparkle) canvas-ls: ${where}`, tooltip: lines.join("\n"), kind: "ok" };
}

/** One line of live canvas text for an `after` decoration: newlines shown as ⏎, long text cut. */
export function canvasLabel(text: string, max = 160): string {
  const oneLine = text.replace(/\r\n|\r|\n/g, " ⏎ ").replace(/\t/g, "  ");
  return oneLine.length > max ? oneLine.slice(0, max - 1) + "…" : oneLine;
}

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";

/**
 * The server writes its log to stderr as "2026-01-02 03:04:05,678 INFO name: message"; the language
 * client would log every stderr chunk as an error. Splits a chunk into lines with the level each
 * line names (its timestamp dropped: the output channel adds its own); continuation lines (such as
 * tracebacks) keep the level of the line before; unrecognised text stays "error".
 */
export function serverLogLines(chunk: string, previous: LogLevel = "error"): { level: LogLevel; text: string }[] {
  const out: { level: LogLevel; text: string }[] = [];
  let level = previous;
  for (const line of chunk.replace(/\r?\n$/, "").split(/\r?\n/)) {
    const m = /^\d{4}-\d\d-\d\d [\d:,.]+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$/.exec(line);
    if (m) {
      level = ({ DEBUG: "debug", INFO: "info", WARNING: "warn", ERROR: "error", CRITICAL: "error" } as const)[m[1] as "DEBUG"];
      out.push({ level, text: m[2] });
    } else {
      out.push({ level, text: line });
    }
  }
  return out;
}
