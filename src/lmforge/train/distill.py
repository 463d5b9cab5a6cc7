"""Stage distill: a student learns from a teacher's logits on chat data (Hinton et al. 2015).

loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels),
over the assistant tokens only; T^2 keeps the soft-target gradients on the scale of the hard ones
(Hinton et al. 2015 §2). Teacher and student must share the tokenizer (same vocabulary).
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import UserInputError
from lmforge.train import sft
from lmforge.train.context import StageContext
from lmforge.train.loading import load_pretrained, trusted

TASK = "causal"
DATA_KIND = "chat"
tokenize = sft.tokenize  # the same masked chat tokens as sft: the loss only counts assistant tokens


def distillation_loss(student_logits: Any, teacher_logits: Any, labels: Any, temperature: float, alpha: float) -> Any:
    import torch.nn.functional as F

    # Position t predicts token t+1: shift logits left and labels right, as causal LM loss does.
    student, teacher, targets = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    mask = targets != -100
    cross_entropy = F.cross_entropy(student[mask], targets[mask])
    kl = F.kl_div(
        F.log_softmax(student[mask] / temperature, dim=-1),
        F.log_softmax(teacher[mask] / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * temperature**2 * kl + (1 - alpha) * cross_entropy


def distill_trainer_class(base: type, teacher: Any, temperature: float, alpha: float) -> type:
    """`base` (a Trainer) whose loss is the distillation loss against `teacher`."""
    import torch

    def compute_loss(
        self: Any, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        labels = inputs["labels"]
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        with torch.no_grad():
            teacher.to(outputs.logits.device)
            teacher_logits = teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        loss = distillation_loss(outputs.logits, teacher_logits, labels, temperature, alpha)
        return (loss, outputs) if return_outputs else loss

    return type(f"Distill{base.__name__}", (base,), {"compute_loss": compute_loss})


def build_trainer(ctx: StageContext) -> Any:
    from transformers import Trainer, TrainingArguments

    options = ctx.config.distill
    assert options.teacher is not None  # the config validator requires it for the distill stage
    teacher = load_pretrained(options.teacher, "causal", **trusted(ctx.config)).eval()
    if teacher.config.vocab_size != ctx.model.config.vocab_size:
        raise UserInputError(
            f"distill.teacher: vocabulary {teacher.config.vocab_size} differs from the student's "
            f"{ctx.model.config.vocab_size}; logit distillation needs the same tokenizer"
        )
    return distill_trainer_class(ctx.wrap(Trainer), teacher, options.temperature, options.alpha)(
        model=ctx.model,
        args=TrainingArguments(**ctx.args, remove_unused_columns=False),
        train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset,
        data_collator=sft.collator(ctx.tokenizer, ctx.train_dataset),
        processing_class=ctx.tokenizer,
        callbacks=ctx.callbacks,
    )
