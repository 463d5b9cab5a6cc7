"""Stage rlhf: online RL of the policy against the trained reward model.

trl 1.16 ships no PPOTrainer, so this uses its GRPOTrainer (default; Shao et al. 2024) or
RLOOTrainer (Ahmadian et al. 2024) with the reward model itself as the reward function: for each
prompt the policy samples rlhf.num_generations completions, the reward model scores them, and the
advantage is each score relative to its group. Prompts come from preference or chat data.
"""

from __future__ import annotations

from typing import Any

from lmforge.train.context import StageContext
from lmforge.train.loading import Trust, load_pretrained, resolve_model_folder, trusted

TASK = "causal"
DATA_KIND = ("preference", "chat", "unpaired_preference")


def prompts_only(dataset: Any) -> Any:
    """A dataset with one `prompt` column (conversational), whatever kind it came as."""
    if "prompt" in dataset.column_names:
        return dataset.select_columns(["prompt"])
    return dataset.map(lambda row: {"prompt": row["messages"][:-1]}, remove_columns=dataset.column_names)


def _reward_tokenizer(source: str, policy_tokenizer: Any, trust: Trust) -> Any:
    """The reward model reads text with its own tokenizer (TRL decodes and re-encodes completions)."""
    from transformers import AutoTokenizer

    folder = resolve_model_folder(source, **trust)
    if not (folder / "tokenizer_config.json").is_file():
        return policy_tokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_trainer(ctx: StageContext) -> Any:
    import trl

    options = ctx.config.rlhf
    assert options.reward_model is not None  # the config validator requires it for the rlhf stage
    reward_model = load_pretrained(options.reward_model, "classify", num_labels=1, **trusted(ctx.config))
    reward_tokenizer = _reward_tokenizer(options.reward_model, ctx.tokenizer, trusted(ctx.config))
    reward_model.config.pad_token_id = reward_tokenizer.pad_token_id
    config_class, trainer_class = (
        (trl.GRPOConfig, trl.GRPOTrainer) if options.algorithm == "grpo" else (trl.RLOOConfig, trl.RLOOTrainer)
    )
    args = dict(ctx.args)
    # Each optimizer step needs whole groups of completions: the micro-batch holds num_generations.
    batch = max(args["per_device_train_batch_size"], options.num_generations)
    args["per_device_train_batch_size"] = batch - batch % options.num_generations
    args["per_device_eval_batch_size"] = args["per_device_train_batch_size"]
    return ctx.wrap(trainer_class)(
        model=ctx.model,
        reward_funcs=reward_model,
        args=config_class(
            **args,
            num_generations=options.num_generations,
            max_completion_length=options.max_new_tokens,
            beta=options.beta,
        ),
        train_dataset=prompts_only(ctx.train_dataset),
        eval_dataset=prompts_only(ctx.eval_dataset) if ctx.eval_dataset is not None else None,
        processing_class=ctx.tokenizer,
        reward_processing_classes=reward_tokenizer,
        callbacks=ctx.callbacks,
    )
