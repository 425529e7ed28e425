"""Peak memory and wall time of `mlm-adapt train` on one large file, in memory and with --streaming.

Builds a text file of --megabytes MB (the demo's Rotten Tomatoes snippets, numbered
so no two lines are equal, one document per line) and runs, each in its own process
under /usr/bin/time, the same short training of the demo's all-MiniLM-L6-v2: once
with the in-memory data path (tokenizes the whole file, then samples chunks), once
with --streaming. Both start from a cold tokenization cache.

    MLM_ADAPT_CACHE=/tmp/mlmcache python benchmarks/streaming_memory.py --megabytes 200
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def build_file(path: Path, megabytes: int) -> int:
    from mlm_adapt.demo.assets import fetch_assets

    with fetch_assets().reviews_csv.open(encoding="utf-8") as fh:
        snippets = [row["text"] for row in csv.DictReader(fh)]
    lines, size = 0, 0
    with path.open("w", encoding="utf-8") as out:
        while size < megabytes * 2**20:
            line = f"{lines}: {snippets[lines % len(snippets)]} {snippets[(lines * 7 + 3) % len(snippets)]}\n"
            out.write(line)
            size += len(line.encode())
            lines += 1
    return lines


def run(name: str, data: Path, model: Path, steps: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as work:
        command = ["/usr/bin/time", "-f", "%M %e", sys.executable, "-m", "mlm_adapt", "train", "--model", str(model),
                   "--data", str(data), "--output", f"{work}/out", "--max-steps", str(steps), "--batch-size", "16",
                   "--eval-size", "200", *extra]
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "MLM_ADAPT_CACHE": f"{work}/cache"})
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        rss_kb, seconds = proc.stderr.strip().splitlines()[-1].split()
        metrics = json.loads(Path(f"{work}/out/metrics.json").read_text())
    return {"variant": name, "peak_rss_mb": int(rss_kb) / 1024, "wall_seconds": float(seconds),
            "perplexity_before": metrics["perplexity_before"], "perplexity_after": metrics["perplexity_after"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from mlm_adapt.demo.assets import fetch_assets

    model = fetch_assets().model_dir
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "big.txt"
        documents = build_file(data, args.megabytes)
        print(f"{data.stat().st_size / 2**20:.0f} MB, {documents:,} documents", flush=True)
        results = [run("in memory", data, model, args.steps, []),
                   run("--streaming", data, model, args.steps, ["--streaming"])]
    for r in results:
        print(f"{r['variant']}: peak RSS {r['peak_rss_mb']:.0f} MB, {r['wall_seconds']:.0f} s wall, "
              f"perplexity {r['perplexity_before']:.1f} -> {r['perplexity_after']:.1f}")
    memory, stream = results
    print(f"--streaming: {memory['peak_rss_mb'] / stream['peak_rss_mb']:.1f}x less peak memory, "
          f"{memory['wall_seconds'] / stream['wall_seconds']:.1f}x the speed for {args.steps} steps")


if __name__ == "__main__":
    main()
