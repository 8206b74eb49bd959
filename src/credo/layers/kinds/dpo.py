"""`dpo`: the manifesto's policy learnt by preference tuning, the teacher's answer preferred to the bare base's.

A retraining baseline, not an identity compiler: TRL's `DPOTrainer` fits a LoRA (distill's rank, targets and schedule)
so that, relative to the untouched base (the adapter switched off is the reference model), the teacher's greedy answer
to each training prompt gains probability over the bare base's greedy answer to the same prompt. Prompts the two
answer alike carry no preference and are left out. `credo.layers.kinds.retrain` holds the data, the budget and resuming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from credo.errors import CredoError
from credo.layers.kinds.retrain import RetrainConfig, RetrainLayer
from credo.layers.registry import register
from credo.runtime.teacher import Answer


@dataclass
class DpoConfig(RetrainConfig):
    beta: float = 0.1  # TRL's default: how far the policy may move from the reference for a given preference margin

    kind: ClassVar[str] = "dpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise CredoError(f"dpo: beta must be greater than 0, got {self.beta}")


@register
class DpoLayer(RetrainLayer):
    kind = "dpo"
    order = 70
    Config = DpoConfig
    uses_base_answers = True

    @classmethod
    def rows(cls, prompt: list[int], teacher: Answer, base: Answer | None) -> dict[str, list[int]] | None:
        if base is None or base.ids == teacher.ids:
            return None
        return {"prompt_ids": prompt, "chosen_ids": teacher.ids, "rejected_ids": base.ids}

    @classmethod
    def trainer(cls, model: torch.nn.Module, config: Any, arguments: dict[str, Any], data: Any, tokenizer: Any, peft: Any) -> Any:
        from trl import DPOConfig, DPOTrainer

        class Pretokenised(DPOTrainer):  # type: ignore[misc]
            """The rows are credo's own token ids (BOS, transcript, answer as generated): re-tokenising their text would
            merge tokens differently at the seams and append an EOS the answers cut at the length cap never had."""

            def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
                return dataset

        args = DPOConfig(**arguments, beta=config.beta, precompute_ref_log_probs=False)
        return Pretokenised(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft)
