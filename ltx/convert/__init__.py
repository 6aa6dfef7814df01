"""Reading other frameworks' checkpoints without those frameworks.

- `torch_pickle`: `torch.save` files (the zip format of PyTorch >= 1.6) read with a restricted
  unpickler: tensors become NumPy arrays, unknown objects inert placeholders, code is never run.
- `arrays`: any supported checkpoint file (`.pth`/`.pt`/`.tar`/`.ckpt`, `.safetensors`, `.npz`) as
  a flat {name: array} state dict, DataParallel's `module.` prefix removed.
"""
