"""Training the canvas-ls diffusion coder: everything the language server never imports.

    data.py    Python sources -> byte-level BPE tokenizer + token shards -> infilling/continuation batches
    module.py  our compact PyTorch copy of the DiffusionGemma text stack and its training losses
    export.py  our weights <-> transformers' DiffusionGemmaForBlockDiffusion checkpoints; a run's weights
               and its export (train.py imports export.py, never the other way)
    train.py   resumable training segments, metrics, plots, export, packing for the GPU machine

Commands and the recipe: model/TRAINING.md; the throughput benchmark: benchmarks/train_speed.py.
Inference (canvas_ls.model.loading, .infill, .sampler, ...) and canvas_ls.server never import this
subpackage; it needs the `train` extra (numpy, matplotlib) on top of the inference dependencies.
What a checkpoint directory holds besides weights (config, generation config, canvas_ls.json) is
written by the inference-side canvas_ls.model.checkpoint, shared with the tiny test model.
"""
