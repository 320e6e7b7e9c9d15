// The VS Code client of canvas-ls: starts `canvas-ls serve` over stdio with vscode-languageclient.
// Inline completions (ghost text) and the light-bulb code actions come from the server through the
// client's standard features; this file adds the palette commands, the status bar item and the
// live canvas decorations.
import * as vscode from "vscode";
import {
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from "vscode-languageclient/node";

import {
  buildInitializationOptions,
  documentSelector,
  LogLevel,
  serverLogLines,
  resolveServerCommand,
  ServerStatus,
  statusView,
} from "./config";
import { LiveCanvas, STEP_NOTIFICATION, StepParams } from "./liveCanvas";

// Commands the server advertises (the client registers them itself and forwards them).
const SERVER_FILL_SELECTION = "canvas.fillSelection";
const SERVER_FILL_BODY = "canvas.fillBody";
const SERVER_REPAIR_SELECTION = "canvas.repairSelection";
const SERVER_STATUS = "canvas.status";

// The extension's own palette commands (different names: the server's are auto-registered).
const CMD_FILL_SELECTION = "canvas.fillSelectionCommand";
const CMD_FILL_BODY = "canvas.fillBodyCommand";
const CMD_REPAIR_SELECTION = "canvas.repairSelectionCommand";
const CMD_SHOW_LOG = "canvas.showLog";
const CMD_RESTART = "canvas.restartServer";

const RESTART_SETTINGS = ["canvas.serverPath", "canvas.serverArgs"];

interface FillResult {
  applied: boolean;
  reason?: string;
  edits?: number;
  forwardPasses?: number; // decoder passes of the batch the fill ran in
  denoisingSteps?: number; // denoising steps the fill's own rows took (<= forwardPasses)
  tokensPerPass?: number;
  seconds?: number;
  changedTokens?: number; // canvas.repairSelection: tokens the repair changed
}

class CanvasClient implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private starting: Promise<void> | undefined;
  private readonly output = vscode.window.createOutputChannel("canvas-ls", { log: true });
  private readonly statusItem = vscode.window.createStatusBarItem("canvas.status", vscode.StatusBarAlignment.Right, 100);
  private readonly live: LiveCanvas;
  private status: ServerStatus | undefined;
  private pending = 0; // requests of ours in flight (inline completions, fills)
  private step: { step: number; maxSteps: number } | undefined;
  private pollTimer: ReturnType<typeof setTimeout> | undefined;
  private disposed = false;

  constructor(private readonly context: vscode.ExtensionContext) {
    this.statusItem.name = "canvas-ls";
    this.statusItem.command = CMD_SHOW_LOG;
    this.live = new LiveCanvas(
      (uri) => (this.client ? this.client.protocol2CodeConverter.asUri(uri) : vscode.Uri.parse(uri)),
      (p) => this.onStep(p),
    );
    this.render();
    this.statusItem.show();
  }

  private settings(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration("canvas");
  }

  initializationOptions(): Record<string, unknown> {
    const cfg = this.settings();
    return buildInitializationOptions((name) => cfg.get(name));
  }

  async start(): Promise<void> {
    if (this.starting) return this.starting;
    this.starting = this.doStart().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const cfg = this.settings();
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const { command, args } = resolveServerCommand(cfg.get("serverPath"), cfg.get("serverArgs"), folder);
    // No `transport`: TransportKind.stdio would append `--stdio`, which `canvas-ls serve` rejects;
    // without it the client still talks over the process's stdin/stdout.
    const run = { command, args, options: folder ? { cwd: folder } : {} };
    const serverOptions: ServerOptions = { run, debug: run };
    const clientOptions: LanguageClientOptions = {
      documentSelector: documentSelector(),
      initializationOptions: () => this.initializationOptions(),
      outputChannel: serverLogChannel(this.output),
      traceOutputChannel: this.output,
      middleware: {
        provideInlineCompletionItems: async (document, position, ctx, token, next) => {
          return this.track(() => next(document, position, ctx, token), token);
        },
      },
    };
    const client = new LanguageClient("canvas", "canvas-ls", serverOptions, clientOptions);
    this.client = client;
    client.onDidChangeState((e) => {
      if (e.newState !== State.Running) {
        this.status = undefined;
        this.pending = 0;
        this.step = undefined;
        this.live.clear();
      }
      this.render();
      if (e.newState === State.Running) this.schedulePoll(0);
    });
    client.onNotification(STEP_NOTIFICATION, (params: StepParams) => this.live.handle(params));
    this.output.info(`starting ${command} ${args.join(" ")}`);
    try {
      await client.start();
    } catch (err) {
      this.render();
      const message = err instanceof Error ? err.message : String(err);
      this.output.error(`could not start ${command}: ${message}`);
      const choice = await vscode.window.showErrorMessage(
        `canvas-ls: could not start \`${command} ${args.join(" ")}\` (${message}). Set canvas.serverPath to the canvas-ls executable.`,
        "Open Settings",
        "Show Log",
      );
      if (choice === "Open Settings") void vscode.commands.executeCommand("workbench.action.openSettings", "canvas.serverPath");
      if (choice === "Show Log") this.output.show(true);
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.clearPoll();
    this.live.clear();
    if (client) {
      try {
        await client.stop(5000);
      } catch (err) {
        this.output.warn(`stopping the server: ${err}`);
      }
      await client.dispose().catch(() => undefined);
    }
    this.render();
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Settings changed: restart for the executable, otherwise tell the running server. */
  async onConfigurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
    if (!e.affectsConfiguration("canvas")) return;
    if (RESTART_SETTINGS.some((s) => e.affectsConfiguration(s))) {
      await this.restart();
      return;
    }
    const client = this.client;
    if (client && client.state === State.Running) {
      await client.sendNotification("workspace/didChangeConfiguration", { settings: { canvas: this.initializationOptions() } });
      this.schedulePoll(500);
    }
  }

  private running(): LanguageClient | undefined {
    return this.client && this.client.state === State.Running ? this.client : undefined;
  }

  /** Counts a request as "filling" until it answers or (for inline completions) is cancelled. */
  private async track<T>(work: () => Thenable<T> | T, token?: vscode.CancellationToken): Promise<T> {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.pending = Math.max(0, this.pending - 1);
      if (this.pending === 0) this.step = undefined;
      this.render();
    };
    this.pending++;
    this.render();
    const onCancel = token?.onCancellationRequested(release);
    try {
      return await work();
    } finally {
      onCancel?.dispose();
      release();
    }
  }

  private onStep(p: StepParams): void {
    this.step = p.done ? undefined : { step: p.step ?? 0, maxSteps: p.maxSteps ?? 0 };
    this.render();
  }

  // ---- commands ----
  async fillSelection(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const client = await this.ready();
    if (!editor || !client) return;
    const selections = editor.selections.filter((s) => !s.isEmpty);
    if (!selections.length) {
      void vscode.window.showInformationMessage("canvas-ls: select the code to fill (every selection becomes a hole), or use Canvas: Fill Function Body.");
      return;
    }
    const c2p = client.code2ProtocolConverter;
    await this.fill(client, SERVER_FILL_SELECTION, [c2p.asUri(editor.document.uri), selections.map((s) => c2p.asRange(s))]);
  }

  async fillBody(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const client = await this.ready();
    if (!editor || !client) return;
    const c2p = client.code2ProtocolConverter;
    await this.fill(client, SERVER_FILL_BODY, [c2p.asUri(editor.document.uri), c2p.asPosition(editor.selection.active)]);
  }

  /** The primary selection: the model re-noises the tokens it finds unlikely and denoises them again. */
  async repairSelection(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const client = await this.ready();
    if (!editor || !client) return;
    if (editor.selection.isEmpty) {
      void vscode.window.showInformationMessage("canvas-ls: select the code to repair.");
      return;
    }
    const c2p = client.code2ProtocolConverter;
    await this.fill(client, SERVER_REPAIR_SELECTION, [c2p.asUri(editor.document.uri), c2p.asRange(editor.selection)]);
  }

  private async fill(client: LanguageClient, command: string, args: unknown[]): Promise<void> {
    try {
      const result = (await this.track(() =>
        client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args }),
      )) as FillResult | null;
      if (result && !result.applied && command === SERVER_REPAIR_SELECTION && result.reason?.startsWith("nothing")) {
        // "nothing to repair", or "nothing repaired: every change ... would add a syntax error"
        void vscode.window.showInformationMessage(`canvas-ls: ${result.reason}`);
      } else if (result && !result.applied) {
        void vscode.window.showWarningMessage(`canvas-ls: nothing applied${result.reason ? `: ${result.reason}` : ""}`);
      } else if (result) {
        const changed = result.changedTokens !== undefined ? `, ${result.changedTokens} token(s) changed` : "";
        this.output.info(`${command}: ${result.edits ?? 0} edit(s)${changed}, ${result.forwardPasses ?? 0} forward passes, ${result.seconds ?? 0}s`);
        if (result.reason) this.output.info(`${command}: ${result.reason}`);
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (!/cancel/i.test(message)) void vscode.window.showErrorMessage(`canvas-ls: ${message}`);
    } finally {
      this.schedulePoll(0);
    }
  }

  private async ready(): Promise<LanguageClient | undefined> {
    if (!this.client) await this.start();
    if (this.starting) await this.starting;
    const client = this.running();
    if (!client) {
      void vscode.window.showErrorMessage("canvas-ls: the server is not running (see Canvas: Show Server Log).");
    }
    return client;
  }

  showLog(): void {
    this.output.show(true);
  }

  // ---- status bar ----
  private clearPoll(): void {
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = undefined;
  }

  /** Polls canvas.status: every second until the model is loaded and warmed up, then every 10 s. */
  private schedulePoll(delay: number): void {
    this.clearPoll();
    if (this.disposed) return;
    this.pollTimer = setTimeout(() => void this.poll(), delay);
  }

  private async poll(): Promise<void> {
    const client = this.running();
    if (!client) return;
    try {
      this.status = (await client.sendRequest(ExecuteCommandRequest.type, { command: SERVER_STATUS, arguments: [] })) as ServerStatus;
    } catch (err) {
      this.output.debug(`canvas.status: ${err}`);
    }
    this.render();
    this.schedulePoll((this.status?.model && !this.status?.warmingUp) || this.status?.error ? 10_000 : 1_000);
  }

  private render(): void {
    const view = statusView(this.status, { running: !!this.running(), busy: this.pending > 0 || !!this.step, step: this.step });
    this.statusItem.text = view.text;
    this.statusItem.tooltip = view.tooltip + "\n\nClick for the server log.";
    this.statusItem.backgroundColor =
      view.kind === "error" ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  dispose(): void {
    this.disposed = true;
    this.clearPoll();
    this.live.dispose();
    this.statusItem.dispose();
    void this.stop().finally(() => this.output.dispose());
  }
}

/**
 * The output channel as the language client sees it: it logs the server's stderr with `error`, so
 * lines that carry the server's own log level are re-logged at that level.
 */
function serverLogChannel(channel: vscode.LogOutputChannel): vscode.LogOutputChannel {
  let last: LogLevel = "error";
  return new Proxy(channel, {
    get(target, prop, receiver) {
      if (prop === "error") {
        return (message: string | Error, ...args: unknown[]) => {
          if (typeof message !== "string" || !/^\d{4}-\d\d-\d\d /.test(message)) return target.error(message, ...args);
          for (const { level, text } of serverLogLines(message, last)) {
            last = level;
            target[level](text);
          }
        };
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

let canvas: CanvasClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  canvas = new CanvasClient(context);
  context.subscriptions.push(
    canvas,
    vscode.commands.registerCommand(CMD_FILL_SELECTION, () => canvas?.fillSelection()),
    vscode.commands.registerCommand(CMD_FILL_BODY, () => canvas?.fillBody()),
    vscode.commands.registerCommand(CMD_REPAIR_SELECTION, () => canvas?.repairSelection()),
    vscode.commands.registerCommand(CMD_SHOW_LOG, () => canvas?.showLog()),
    vscode.commands.registerCommand(CMD_RESTART, () => canvas?.restart()),
    vscode.workspace.onDidChangeConfiguration((e) => canvas?.onConfigurationChanged(e)),
  );
  await canvas.start();
}

export async function deactivate(): Promise<void> {
  const c = canvas;
  canvas = undefined;
  if (c) await c.stop();
}
