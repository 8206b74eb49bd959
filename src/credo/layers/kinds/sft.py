"""`sft`: the manifesto's policy learnt the way most people would learn it today, by supervised fine-tuning.

A retraining baseline, not an identity compiler: TRL's `SFTTrainer` fits a LoRA (distill's rank, targets and schedule)
to the teacher's greedy answers to the training prompts, with the loss on the answer tokens alone. Where `distill`
matches the teacher's whole next-token distribution, SFT sees the one token the teacher chose at each position.
`credo.layers.kinds.retrain` holds the data, the budget and resuming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from credo.layers.kinds.retrain import RetrainConfig, RetrainLayer
from credo.layers.registry import register
from credo.runtime.teacher import Answer


@dataclass
class SftConfig(RetrainConfig):
    kind: ClassVar[str] = "sft"


@register
class SftLayer(RetrainLayer):
    kind = "sft"
    order = 60
    Config = SftConfig

    @classmethod
    def rows(cls, prompt: list[int], teacher: Answer, base: Answer | None) -> dict[str, list[int]] | None:
        return {"input_ids": prompt + teacher.ids, "completion_mask": [0] * len(prompt) + [1] * len(teacher.ids)}

    @classmethod
    def trainer(cls, model: torch.nn.Module, config: Any, arguments: dict[str, Any], data: Any, tokenizer: Any, peft: Any) -> Any:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**arguments, completion_only_loss=True, packing=False, padding_free=False)
        return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft)
