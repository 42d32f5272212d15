"""What the default batch size and thread count rest on: per-chip onnxruntime time and peak
memory of the default model for several batch sizes, and one thread against all cores. Each
setting runs in its own child process so its peak memory is its own. Prints; asserts nothing.

    .venv/bin/python bench/bench_batch.py
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD = """
import sys, time
import numpy as np
sys.path[:0] = [{plugins!r}]
from s2masks.core import inference, models
model = inference.OnnxModel(models.default_card('cloud'), threads={threads})
chips = np.random.default_rng(0).normal(size=({batch}, 6, 256, 256)).astype(np.float32)
model.session.run(None, {{model.input.name: chips}})  # warm-up
seconds = []
for _ in range(3):
    start = time.perf_counter()
    model.session.run(None, {{model.input.name: chips}})
    seconds.append(time.perf_counter() - start)
peak_kb = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))
print(min(seconds) / {batch}, peak_kb)
"""


def measure(batch, threads=0):
    script = CHILD.format(plugins=str(REPO / ".build" / "plugins"), batch=batch, threads=threads)
    per_chip, peak_kb = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                       check=True).stdout.split()
    return float(per_chip), int(peak_kb) / 1024


def main():
    print("default model, 256 x 256 chips: onnxruntime time per chip and peak memory of the process")
    results = {batch: measure(batch) for batch in (1, 2, 4, 8)}
    reference = results[4][0]
    for batch, (per_chip, peak_mb) in results.items():
        print(f"  batch {batch}: {per_chip:.4f} s per chip ({per_chip / reference:.2f}x batch 4), peak {peak_mb:.0f} MB")
    one_thread, _ = measure(4, threads=1)
    print(f"  batch 4 on one thread: {one_thread:.4f} s per chip -> all cores are {one_thread / reference:.2f}x faster")


if __name__ == "__main__":
    main()
