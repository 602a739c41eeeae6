"""Open PyTorch checkpoints of every common shape, lazily and without running code from them.

Layers, from the bytes up (one module each):

0. `errors`: `CheckpointError`, the one exception (a one-line message and a `ProblemKind`);
1. `sniff`: what a file is by its first bytes (empty file, Git LFS pointer, text/HTML, zip, legacy
   torch, plain pickle, safetensors, tar); `storage`: the bytes behind one tensor in a torch zip or a
   legacy file, checked against the file before anything is read;
2. `tree`: the unpickled object per file (`TorchTree`), where tensors are either real tensors (from
   `torch.load(weights_only=True, mmap=True)`) or `TensorRef`s (restricted unpickler), plus a
   `materialise(leaf)` that returns one float32 tensor reading only that tensor's bytes. How a file
   is unpickled is a `LoadPolicy` chosen once per read: `SAFE`, or `TRUSTED` for --trust-pickles;
3. `interpret`: find the state dict (plain, nested under model/state_dict/..., Lightning,
   DataParallel, a pickled or scripted module), strip prefixes, split params from buffers, pick
   metadata and the training step; `optimizer`: map optimizer state back to parameter names;
4. `hf`: safetensors files, shards (`*.index.json`) and Hugging Face folders, through `safe_open`;
5. `read`: the entry points (`open_checkpoint`, `read_checkpoints`, `order_series`).

Only the TRUSTED policy ever calls `torch.load(weights_only=False)`, `torch.jit.load` or `pickle.load`.

Hostile files: every tensor view is checked against the bytes that really back it when the file is
opened (storage present, no negative sizes or strides, offset + extent inside the zip entry or
legacy data block, bounded repetition); a tensor that fails is dropped with a Problem, a file with
none left is a CheckpointError. Nothing is allocated before its size has been checked against the
file, compressed zip entries are streamed, and shard paths must stay inside the index's folder.
`open_checkpoint` raises only CheckpointError, and `CheckpointData.load` only CheckpointError.
"""
from report_gen.readers.checkpoint.errors import CheckpointError
from report_gen.readers.checkpoint.interpret import step_from_name
from report_gen.readers.checkpoint.optimizer import optimizer_facts
from report_gen.readers.checkpoint.read import open_checkpoint, order_series, read_checkpoints
from report_gen.readers.checkpoint.tree import SAFE, TRUSTED, LoadPolicy, load_policy

__all__ = ["SAFE", "TRUSTED", "CheckpointError", "LoadPolicy", "load_policy", "open_checkpoint", "optimizer_facts",
           "order_series", "read_checkpoints", "step_from_name"]
