"""Compile a model's decoder step in a process of its own, to fill torch's disk caches for it.

    python -m canvas_ls.model.precompile '{"model": DIR, "device": "cpu", "dtype": "bfloat16",
                                           "canvas_length": 256, "max_prompt_tokens": 768, "threads": [2, 1]}'

A server's background warm-up (model/warm_up.py) runs this before it compiles the step itself beside
fills, the first time a model is compiled on a machine. A compile whose caches are cold traces graphs
with torch.fx, and torch.fx's tracer replaces every module's __call__ process-wide while it traces: a
fill running beside it on another thread then failed ("module is not installed as a submodule"). Here
that work runs in another interpreter (its own GIL; one C++ compiler job at a time, see warm_up.py), and
the server's own compile then finds every graph in the caches (AOTAutograd's and inductor's) and traces
nothing with torch.fx. Exit status 0: compiled.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = json.loads((argv if argv is not None else sys.argv[1:])[0])
    from .infill import Infiller
    from .loading import load_model

    loaded = load_model(Path(args["model"]), device=args["device"], dtype=args["dtype"])
    loaded.canvas_length = int(args["canvas_length"])
    inf = Infiller(loaded, max_prompt_tokens=int(args["max_prompt_tokens"]), compile="on")
    example = inf.warmer.step_example(32, with_sc=True)  # the server's own example (warm_up.py)
    return 0 if inf.step.warm_up([example], [int(n) for n in args["threads"]]) else 1


if __name__ == "__main__":
    sys.exit(main())
