"""Start a real vLLM (vllm-cpu 0.32.0 from `.venv-vllm`, built by `make vllm-setup`) on a tiny checkpoint.

TEST SUPPORT ONLY: every adaptation vLLM needs on a CPU-only machine lives here and in site/ (see README.md
next to this file); none of it ships in the canvas_ls package.

    ckpt = tiny_checkpoint(tmp / "tiny")          # build_tiny_checkpoint + the sampler config vLLM needs
    with VllmServer(ckpt, api_key="k") as server:  # 127.0.0.1 on a free port; waits for /health
        server.warm_up()                          # pay vLLM's first-request compilation here, not in a test
        ... server.url, server.metrics(), server.kill(), server.start() ...

`python -m tests.vllm_support.server CHECKPOINT [--port N] [--api-key K]` runs one by hand.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("CANVAS_VLLM_VENV", REPO / ".venv-vllm"))
SITE = Path(__file__).resolve().parent / "site"  # sitecustomize.py: the CPU-only shims

CANVAS = 32  # the served canvas: small, so CPU fills take well under a second once warm
MAX_MODEL_LEN = 1024
MAX_NUM_SEQS = 4

# What published DiffusionGemma checkpoints carry in generation_config.json; vLLM refuses to start
# (a TypeError) on the nulls older tiny builders wrote.
SAMPLER_CONFIG = {
    "sampler_config": {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1},
    "t_min": 0.4,
    "t_max": 0.8,
    "stability_threshold": 1,
    "confidence_threshold": 0.005,
    "max_denoising_steps": 48,
}


def vllm_python() -> Path | None:
    """The interpreter of the vLLM venv, or None when `make vllm-setup` has not been run."""
    exe = VENV / "bin" / "python"
    return exe if exe.exists() and (VENV / ".canvas-vllm-installed").exists() else None


def require_vllm() -> bool:
    return os.environ.get("CANVAS_REQUIRE_VLLM", "") not in ("", "0", "false", "no")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_sampler_config(ckpt: str | os.PathLike) -> Path:
    """Make generation_config.json carry a real sampler configuration (keeps any other keys)."""
    path = Path(ckpt) / "generation_config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        cfg = {}
    if any(cfg.get(k) in (None, {}) for k in SAMPLER_CONFIG):
        cfg.update({k: v for k, v in SAMPLER_CONFIG.items() if cfg.get(k) in (None, {})})
        path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def tiny_checkpoint(out_dir: str | os.PathLike) -> Path:
    """A tiny random-weight DiffusionGemma checkpoint that vLLM serves (and canvas-ls loads in-process)."""
    from canvas_ls.model.tiny import build_tiny_checkpoint

    out = build_tiny_checkpoint(out_dir)
    ensure_sampler_config(out)
    return out


def tiny_autoregressive_checkpoint(out_dir: str | os.PathLike, tokenizer_from: str | os.PathLike) -> Path:
    """A tiny random LlamaForCausalLM with the tiny DiffusionGemma's tokenizer: a model vLLM serves that
    is not a diffusion model (canvas-ls must refuse it clearly)."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tokenizer_from) / name, out / name)
    cfg = LlamaConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    return out


class VllmServer:
    """One vLLM OpenAI server process (and its engine children, in their own process group)."""

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        port: int | None = None,
        api_key: str | None = None,
        canvas: int = CANVAS,
        max_model_len: int = MAX_MODEL_LEN,
        max_num_seqs: int = MAX_NUM_SEQS,
        log_path: str | os.PathLike | None = None,
        extra_args: list[str] | None = None,
        diffusion: bool = True,
    ) -> None:
        self.model = str(model)
        self.diffusion = diffusion  # False: an autoregressive checkpoint (no diffusion flags)
        self.port = port or free_port()
        self.api_key = api_key
        self.canvas = canvas
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.extra_args = list(extra_args or [])
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        exe = vllm_python()
        if exe is None:
            raise RuntimeError(f"no vLLM venv at {VENV}: run make vllm-setup")
        # The `vllm` console script fails (the distribution is named vllm-cpu): run the module.
        cmd = [
            str(exe),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            str(self.max_model_len),
            "--max-num-seqs",
            str(self.max_num_seqs),
            # /load: the requests its API server holds, counted there, so it reads right while the
            # engine core is paused (/metrics' gauges come from engine steps).
            "--enable-server-load-tracking",
        ]
        if self.diffusion:
            # --language-model-only: else vLLM builds the (unused) vision tower and crashes on its config.
            cmd += ["--language-model-only", "--diffusion-config", json.dumps({"canvas_length": self.canvas})]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra_args

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env["PYTHONPATH"] = os.pathsep.join([str(SITE), *filter(None, [env.get("PYTHONPATH")])])
        env["CANVAS_VLLM_SHIMS"] = "1"  # site/sitecustomize.py acts only with this set
        env["TRITON_INTERPRET"] = "1"  # Triton kernels in Triton's interpreter: PyPI's Triton has no CPU backend
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of K/V cache: about 3 GB of memory in all
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        return env

    def start(self, timeout: float = 600.0) -> "VllmServer":
        """Start the server and wait until /health answers; raises with the log's tail if it cannot."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = open(self.log_path, "ab")
        log.write(f"\n==== start {self.starts + 1}: {' '.join(self.command())}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(),
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {self.proc.returncode} while starting; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(
            f"vLLM did not answer /health within {timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL the server and its engine processes: a crash, as far as a client can tell."""
        self._signal(signal.SIGKILL)
        self._wait(30)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        if not self._wait(30):
            self._signal(signal.SIGKILL)
            self._wait(30)

    def engine_pids(self) -> list[int]:
        """The engine-core processes (not the API server): they run the denoising steps."""
        pids = []
        if self.proc is None:
            return pids
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                pgid = os.getpgid(int(entry.name))
                names = (entry / "cmdline").read_bytes() + (entry / "comm").read_bytes()
            except (OSError, ProcessLookupError):
                continue
            if pgid == self.proc.pid and b"EngineCor" in names:  # its title; comm keeps 15 bytes
                pids.append(int(entry.name))
        return pids

    @contextlib.contextmanager
    def engine_paused(self):
        """SIGSTOP the engine core for the block: its requests stay in flight, unable to finish, while
        the API server still takes requests, disconnects and aborts (they queue for the engine). So a test
        can cancel a fill with no race against the fill running to its end."""
        pids = self.engine_pids()
        if not pids:
            raise RuntimeError(f"no vLLM engine-core process found in group {self.proc and self.proc.pid}")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield pids
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)  # the group this server's Popen created (start_new_session)
            except ProcessLookupError:
                pass

    def _wait(self, seconds: float) -> bool:
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        # The engine children share the group; give them a moment to go too.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        return False

    def __enter__(self) -> "VllmServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # ---- talking to it ------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def metrics(self) -> dict[str, float]:
        """vLLM's /metrics, summed over labels: {"vllm:num_requests_running": 0.0, ...}; also
        "<name>{finished_reason=...}" entries for request_success_total."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith("vllm:"):
                continue
            m = re.match(r"^([^{\s]+)(\{[^}]*\})?\s+(\S+)$", line)
            if not m:
                continue
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            out[name] = out.get(name, 0.0) + value
            reason = re.search(r'finished_reason="([^"]+)"', labels)
            if reason:
                key = f"{name}{{finished_reason={reason.group(1)}}}"
                out[key] = out.get(key, 0.0) + value
        return out

    def load(self) -> int:
        """Completion requests the API server holds now (sent and not yet answered)."""
        return int(httpx.get(self.url + "/load", timeout=10).json()["server_load"])

    def model_name(self) -> str:
        r = httpx.get(self.url + "/v1/models", headers=self.headers(), timeout=10)
        r.raise_for_status()
        return r.json()["data"][0]["id"]

    def warm_up(self, concurrency: tuple[int, ...] = (1, 2, 4)) -> float:
        """Run the shapes the tests use once (vLLM compiles on first use: 10-60 s each on 2 cores)."""
        t0 = time.monotonic()
        model = self.model_name()

        def one(width: int, steps: int) -> None:
            seed = [5] * width
            body = {
                "model": model,
                "prompt": [2, 5, 6],
                "max_tokens": width,
                "logprobs": 0,
                "return_token_ids": True,
                "vllm_xargs": {
                    "diffusion_seed_canvas": seed,
                    "diffusion_pinned": list(range(width // 2, width)),
                    "diffusion_canvas_length": width,
                    "diffusion_max_steps": steps,
                    "diffusion_read_only": 1,
                },
            }
            r = httpx.post(self.url + "/v1/completions", json=body, headers=self.headers(), timeout=600)
            r.raise_for_status()

        one(1, 1)  # canvas-ls's start-up probe shapes
        for n in concurrency:
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                list(pool.map(lambda _: one(self.canvas, 16), range(n)))
        return time.monotonic() - t0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="run vLLM on a checkpoint with the CPU test adaptations")
    ap.add_argument("checkpoint", nargs="?", help="checkpoint directory (default: build a tiny one in a temp dir)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--canvas", type=int, default=CANVAS)
    a = ap.parse_args(argv)
    ckpt = Path(a.checkpoint) if a.checkpoint else tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny")
    ensure_sampler_config(ckpt)
    server = VllmServer(ckpt, port=a.port or None, api_key=a.api_key, canvas=a.canvas)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server too, not just this launcher
    server.start()
    print(f"vLLM serves {ckpt} at {server.url} (log {server.log_path}); Ctrl-C stops it", flush=True)
    try:
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
