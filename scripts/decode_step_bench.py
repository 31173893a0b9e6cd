"""Decode-step time and cross-attention memory: greedy vs beam search, ours vs transformers, in one run.

Both models hold the same random weights (ours, saved in the Hub layout and read by transformers). For each
implementation and beam count, one `generate` call runs `--steps` decoding steps on a `--src-len`-token input;
a forward pre-hook stamps the start of every decoder call, and the time between two stamps is one full decoding
step (decoder forward, logits processing, beam bookkeeping, cache reordering). The first step is reported apart:
it also computes the cross-attention keys/values. The encoder runs before the first stamp and is not counted.

Cross-attention memory is read off the caches after generation: ours holds keys/values once per input, the
reference once per beam.

    .venv/bin/python scripts/decode_step_bench.py                      # pegasus-large size, 4096 tokens
    .venv/bin/python scripts/decode_step_bench.py --small --src-len 512  # a quick check of the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

import bigbird
from bigbird.models import generation
from bigbird.models.presets import config_from_name


def large_config(small: bool) -> bigbird.BigBirdPegasusConfig:
    """google/bigbird-pegasus-large-* architecture, or its small stand-in for a dry run."""
    return config_from_name("bigbird-pegasus-small" if small else "bigbird-pegasus-large")


class StepClock:
    """Stamps the start of every call of a module; differences between stamps are decoding steps."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.stamps: list[float] = []
        self.handle = module.register_forward_pre_hook(lambda *_: self.stamps.append(time.perf_counter()))

    def steps(self, end: float) -> list[float]:
        marks = [*self.stamps, end]
        return [b - a for a, b in zip(marks, marks[1:], strict=False)]

    def close(self) -> None:
        self.handle.remove()


def run(name: str, model, ids: torch.Tensor, beams: int, steps: int) -> dict:
    """One generate call of exactly `steps` new tokens; returns step times and cross-attention bytes."""
    caches: list[generation.DecoderCache] = []
    original = generation.DecoderCache

    class Recording(original):  # keeps a handle on our cache to measure it afterwards
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            caches.append(self)

    options = dict(num_beams=beams, max_new_tokens=steps, min_new_tokens=steps, length_penalty=1.0)
    clock = StepClock(model)
    started = time.perf_counter()
    with torch.inference_mode():
        if name == "ours":
            generation.DecoderCache = Recording
            try:
                out = model.generate(ids, **options)
            finally:
                generation.DecoderCache = original
            cross = sum(k.nbytes + v.nbytes for k, v in caches[0].cross)
        else:
            result = model.generate(ids, return_dict_in_generate=True, **options)
            out = result.sequences
            cross_cache = result.past_key_values.cross_attention_cache
            cross = sum(layer.keys.nbytes + layer.values.nbytes for layer in cross_cache.layers)
    ended = time.perf_counter()
    clock.close()
    times = clock.steps(ended)
    return {
        "impl": name,
        "beams": beams,
        "encoder_s": round(clock.stamps[0] - started, 3),
        "first_step_s": round(times[0], 3),
        "step_median_s": round(statistics.median(times[1:]), 4),
        "steps_timed": len(times) - 1,
        "cross_kv_MiB": round(cross / 2**20, 1),
        "tokens": out.shape[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src-len", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=4, help="decoding steps per generate call (the first is apart)")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--small", action="store_true", help="a small model, to check the script quickly")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    ours = bigbird.BigBirdPegasusForConditionalGeneration(large_config(args.small)).eval()
    with tempfile.TemporaryDirectory() as directory:
        ours.save_pretrained(directory)
        theirs = transformers.BigBirdPegasusForConditionalGeneration.from_pretrained(directory).eval()
    ids = torch.randint(3, ours.config.vocab_size, (1, args.src_len))
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "threads": torch.get_num_threads(),
                "src_len": args.src_len,
                "params_M": round(sum(p.numel() for p in ours.parameters()) / 1e6, 1),
            }
        ),
        flush=True,
    )
    for beams in args.beams:
        for name, model in (("ours", ours), ("transformers", theirs)):
            print(json.dumps(run(name, model, ids, beams, args.steps)), flush=True)


if __name__ == "__main__":
    main()
