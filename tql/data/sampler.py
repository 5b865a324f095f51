"""Uniform minibatch sampling of transitions held as tensors on one device."""

from __future__ import annotations

import numpy as np
import torch

from tql.errors import TQLError

SAMPLE_KEYS = ("observations", "actions", "rewards", "masks", "next_observations")


class ReplaySampler:
    """Holds a transition dict as float32 tensors on ``device``; samples with one randint.

    ``data`` needs observations, actions, rewards, masks and next_observations (as produced by
    ``tql.data.load_task_data``); other keys are ignored.
    """

    def __init__(self, data: dict[str, np.ndarray], device: str | torch.device = "cpu") -> None:
        missing = [k for k in SAMPLE_KEYS if k not in data]
        if missing:
            raise TQLError(f"transition data lacks {', '.join(missing)} (has {', '.join(sorted(data))})")
        n = len(data["observations"])
        if n == 0:
            raise TQLError("cannot sample from an empty dataset")
        bad = [k for k in SAMPLE_KEYS if len(data[k]) != n]
        if bad:
            raise TQLError(f"transition arrays {', '.join(bad)} do not have {n} rows like observations")
        self.device = torch.device(device)
        self.tensors: dict[str, torch.Tensor] = {
            k: torch.from_numpy(np.ascontiguousarray(data[k], dtype=np.float32)).to(self.device) for k in SAMPLE_KEYS
        }
        self._n = n

    def __len__(self) -> int:
        return self._n

    @property
    def obs_dim(self) -> int:
        return int(self.tensors["observations"].shape[-1])

    @property
    def act_dim(self) -> int:
        return int(self.tensors["actions"].shape[-1])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def sample_indices(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch_size`` uniform indices (with replacement) on the data's device."""
        if batch_size < 1:
            raise TQLError(f"batch size must be >= 1 (got {batch_size})")
        # Draw on the generator's device (a CPU generator cannot fill a CUDA tensor), then move.
        gen_device = generator.device if generator is not None else self.device
        idx = torch.randint(0, self._n, (batch_size,), generator=generator, device=gen_device)
        return idx.to(self.device, non_blocking=True)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A batch dict with the SAMPLE_KEYS: (B, obs_dim), (B, act_dim), (B,), (B,), (B, obs_dim)."""
        idx = self.sample_indices(batch_size, generator)
        return {k: t[idx] for k, t in self.tensors.items()}
