// Live canvas: draws the server's canvas/step notifications (the intermediate fill of every
// denoising step, "·" for still-noisy slots) as faded decorations, and clears them when done.
import * as vscode from "vscode";

import { canvasLabel } from "./config";

export const STEP_NOTIFICATION = "canvas/step";

export interface LspRange {
  start: { line: number; character: number };
  end: { line: number; character: number };
}

export interface StepParams {
  uri: string;
  version: number;
  step?: number;
  maxSteps?: number;
  done: boolean;
  spans?: { range: LspRange; text: string }[];
}

export class LiveCanvas implements vscode.Disposable {
  /** The hole's current text is faded out while the canvas is drawn after it. */
  private readonly holeType = vscode.window.createTextEditorDecorationType({
    opacity: "0.35",
    rangeBehavior: vscode.DecorationRangeBehavior.ClosedClosed,
  });
  /** The canvas itself, as after-text at the hole's end. */
  private readonly canvasType = vscode.window.createTextEditorDecorationType({
    rangeBehavior: vscode.DecorationRangeBehavior.ClosedClosed,
  });
  /** uri string -> the document version the drawn canvas belongs to. */
  private readonly drawn = new Map<string, number>();
  private readonly subscriptions: vscode.Disposable[] = [];

  constructor(
    private readonly asUri: (uri: string) => vscode.Uri,
    private readonly onStep: (params: StepParams) => void = () => undefined,
  ) {
    // Typing into a document invalidates the ranges: drop its canvas.
    this.subscriptions.push(
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (e.contentChanges.length) this.clear(e.document.uri.toString());
      }),
      vscode.workspace.onDidCloseTextDocument((d) => this.clear(d.uri.toString())),
      vscode.window.onDidChangeVisibleTextEditors(() => this.clearInvisible()),
    );
  }

  handle(params: StepParams): void {
    const key = this.asUri(params.uri).toString();
    this.onStep(params);
    if (params.done) {
      this.clear(key);
      return;
    }
    const editors = vscode.window.visibleTextEditors.filter((e) => e.document.uri.toString() === key);
    if (!editors.length || editors[0].document.version !== params.version) return; // stale or not shown
    const holes: vscode.Range[] = [];
    const canvases: vscode.DecorationOptions[] = [];
    for (const span of params.spans ?? []) {
      const r = new vscode.Range(span.range.start.line, span.range.start.character, span.range.end.line, span.range.end.character);
      if (!r.isEmpty) holes.push(r);
      canvases.push({
        range: new vscode.Range(r.end, r.end),
        hoverMessage: `canvas-ls: step ${params.step ?? "?"}/${params.maxSteps ?? "?"}`,
        renderOptions: {
          after: {
            contentText: canvasLabel(span.text),
            color: new vscode.ThemeColor("canvas.liveCanvasForeground"),
            fontStyle: "italic",
          },
        },
      });
    }
    for (const editor of editors) {
      editor.setDecorations(this.holeType, holes);
      editor.setDecorations(this.canvasType, canvases);
    }
    this.drawn.set(key, params.version);
  }

  clear(key?: string): void {
    for (const editor of vscode.window.visibleTextEditors) {
      const k = editor.document.uri.toString();
      if (key !== undefined && k !== key) continue;
      if (!this.drawn.has(k)) continue;
      editor.setDecorations(this.holeType, []);
      editor.setDecorations(this.canvasType, []);
    }
    if (key === undefined) this.drawn.clear();
    else this.drawn.delete(key);
  }

  private clearInvisible(): void {
    const visible = new Set(vscode.window.visibleTextEditors.map((e) => e.document.uri.toString()));
    for (const key of [...this.drawn.keys()]) if (!visible.has(key)) this.drawn.delete(key);
  }

  dispose(): void {
    this.clear();
    this.holeType.dispose();
    this.canvasType.dispose();
    for (const s of this.subscriptions) s.dispose();
  }
}
