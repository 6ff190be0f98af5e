from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest

from search_spaces import Arch, get_space


@pytest.fixture
def sampled_archs() -> Callable[..., list[Arch]]:
    """``sampled_archs(space_name, n, seed=0)``: n architectures drawn by Optuna's random sampler."""

    def sample(space_name: str, n: int, seed: int = 0) -> list[Arch]:
        space = get_space(space_name)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        archs = []
        for _ in range(n):
            trial = study.ask()
            archs.append(space.sample(trial))
            study.tell(trial, 0.0)
        return archs

    return sample
