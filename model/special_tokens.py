"""The special tokens every canvas-ls checkpoint trained here carries, at fixed ids.

Fixed ids keep the tiny test checkpoints, the bundled model and the training code in agreement.
A user's DiffusionGemma checkpoint brings its own ids; `model.loading` reads them from its config.
"""

PAD = "<pad>"  # fills hole slots after the span has ended (how the model says "the fill is over")
EOS = "<eos>"  # end of text / end of the filled span
BOS = "<bos>"  # start of the encoder prompt
MASK = "<mask>"  # absorbing-noise state; only used when the checkpoint declares absorbing noise

ORDER = (PAD, EOS, BOS, MASK)
PAD_ID, EOS_ID, BOS_ID, MASK_ID = range(4)
