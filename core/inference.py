"""Cloud and shadow probabilities with ONNX segmentation models described by model cards
(FarmVibes' compute_cloud_prob / compute_shadow_prob, improved).

- The model is checked against its card when loaded (input channels, dtype, chip size, output
  shape, by one probe run) and the raster against the card (band names and order).
- The raster is read at the model's native resolution (area average; 30 m for ukis-csmask,
  so 3 x 3 pixels of the 10 m stack) and probabilities are brought back to the raster's grid
  with bilinear resampling as each row of chips is finished (no intermediate file).
- Chips overlap and are blended with smooth (sine) weights, so there are no seams; FarmVibes
  cuts each chip at the midpoint instead. Batches of chips run through onnxruntime on all cores.
- The input's scale is known, never guessed silently: the raster's band scale/offset metadata
  (Download and stack writes 0.0001), else, for a raster without it, digital numbers or
  reflectance as the values say (Sentinel-2 L2A DN are in the hundreds to thousands, reflectance
  is mostly below 1.5), or what the caller chose; the log says which. Models then get their
  card's units: reflectance, or DN (reflectance x 10000) for FarmVibes' cloud models.
- Pixels where any band is nodata get no probability: NaN, the outputs' declared nodata
  (FarmVibes writes 1 there; the mask step still masks them, as nodata). Chips with no valid
  pixel skip the model; blending and resampling leave NaN out, so nodata does not leak into
  the probabilities of its valid neighbours.
- Each output records its model card and the card's mask rule (GeoTIFF tags), so the mask
  step applies the rule of the model that made it.
- `in_memory=False` streams chip rows from disk with a rolling accumulator (bounded memory);
  `in_memory=True` reads the raster once. Cloud and shadow from one multi-class model take one pass.
- Outputs are float32 tiled, compressed GeoTIFFs in [0, 1] (NaN nodata), published by rename; Cancel between
  batches leaves nothing. A loaded model is kept for the next run in the same session.
"""

import math
import os
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cogread, models, tempfiles
from .errors import Cancelled, InputError
from .records import S2_BANDS
from .stack import check_writable

PROBABILITY_AT_NODATA = np.float32(np.nan)  # where the stack has no data (the outputs' nodata)
REFLECTANCE_PER_DN = 1e-4  # Sentinel-2 L2A: reflectance = DN x 0.0001 (offset removed by Download and stack)
DN_PER_REFLECTANCE = 10000.0
# Median of valid values above which a raster without scale metadata holds DN, not reflectance:
# L2A DN are in the hundreds to thousands, reflectance is mostly below 1.5 (bright cloud ~1).
DN_MEDIAN_ABOVE = 1.5
REFLECTANCE_MEDIAN_RANGE = (0.001, DN_MEDIAN_ABOVE)  # outside it, scale metadata are doubted (a warning)
INPUT_SCALES = ("auto", "reflectance", "dn")


@dataclass(frozen=True)
class InferenceOptions:
    in_memory: bool = False
    batch_size: int = 4  # as fast per chip as 8 with the ukis-csmask model, ~180 MB less onnxruntime memory
    overlap: float = None  # None: the card's
    threads: int = 0  # 0: all cores (see thread_layout)
    # "auto": the raster's scale metadata, else judged from its values; "reflectance": values are
    # reflectance already; "dn": values are DN, reflectance = DN x 0.0001 (both ignore the metadata).
    input_scale: str = "auto"


def thread_layout(threads=0):
    """(model runs side by side, onnxruntime threads per run) for `threads` threads in all (0: every
    core). Two runs at a time, each on half the threads, keep the cores busier than one run on all
    of them (one thread per run on 2 cores: about 15% less CPU per chip), and the reading and
    writing between runs fill the gaps; more runs would only add memory (one batch each)."""
    total = int(threads) or os.cpu_count() or 1
    runs = 2 if total >= 2 else 1
    return runs, total // runs


def validate_options(options):
    if options.batch_size < 1:
        raise InputError(f"Batch size must be at least 1, got {options.batch_size}.")
    if options.overlap is not None and not 0 <= options.overlap <= 0.5:
        raise InputError(f"Overlap must be between 0 and 0.5 (a fraction of the chip), got {options.overlap}.")
    if options.input_scale not in INPUT_SCALES:
        raise InputError(f"Input scale must be one of {', '.join(INPUT_SCALES)}, got {options.input_scale!r}.")


@dataclass(frozen=True)
class InputScale:
    """reflectance = value x gain + offset, per band of the raster (index 0 is band 1)."""

    gains: tuple
    offsets: tuple
    how: str  # what was assumed, for the log
    warning: str = None  # when the values contradict it

    def for_model(self, band_indexes, reflectance):
        """float32 (gain, offset) per model band, from the raster's values to the model's units
        (reflectance, or DN = reflectance x 10000); None for a gain of 1 / an offset of 0."""
        unit = 1.0 if reflectance else DN_PER_REFLECTANCE
        gain = np.array([self.gains[i - 1] * unit for i in band_indexes], dtype=np.float32)
        offset = np.array([self.offsets[i - 1] * unit for i in band_indexes], dtype=np.float32)
        return (None if (gain == 1).all() else gain), (None if (offset == 0).all() else offset)


def input_scale(src, band_indexes, mode="auto"):
    """How the raster's values become reflectance (InputScale); `mode` as InferenceOptions.input_scale."""
    count = src.count
    if mode == "reflectance":
        return InputScale((1.0,) * count, (0.0,) * count, "Input scale: the values are reflectance (as chosen), "
                                                          "used as they are.")
    if mode == "dn":
        return InputScale((REFLECTANCE_PER_DN,) * count, (0.0,) * count,
                          "Input scale: the values are digital numbers (as chosen), reflectance = DN x 0.0001.")
    scales = tuple(float(v) if v else 1.0 for v in src.scales)
    offsets = tuple(float(v) if v else 0.0 for v in src.offsets)
    sample = _sample(src, band_indexes)
    if any(v != 1.0 for v in scales) or any(v != 0.0 for v in offsets):
        used = sorted({(scales[i - 1], offsets[i - 1]) for i in band_indexes})
        formula = (f"DN x {used[0][0]:g}" + (f" + {used[0][1]:g}" if used[0][1] else "")) if len(used) == 1 \
            else "DN x each band's scale + offset"
        scale = InputScale(scales, offsets, f"Input scale: the raster's band scale metadata, reflectance = {formula}.")
        if sample.size:
            gains = np.array([scales[i - 1] for i in band_indexes])[:, None]
            shifts = np.array([offsets[i - 1] for i in band_indexes])[:, None]
            median = float(np.median(sample * gains + shifts))
            if not REFLECTANCE_MEDIAN_RANGE[0] <= median <= REFLECTANCE_MEDIAN_RANGE[1]:
                scale = InputScale(scales, offsets, scale.how, (
                    f"With the raster's scale metadata the median reflectance is {median:g}, which is not "
                    "reflectance (mostly 0.001-1.5): the metadata look wrong. Set the input scale (INPUT_SCALE) "
                    "to what the values are."))
        return scale
    if sample.size:
        median = float(np.median(sample))
        dn = median > DN_MEDIAN_ABOVE
        evidence = f"their median is {median:g}"
    else:
        dn = np.issubdtype(np.dtype(src.dtypes[band_indexes[0] - 1]), np.integer)
        evidence = f"no valid pixel to judge by; {src.dtypes[band_indexes[0] - 1]} values"
    if dn:
        return InputScale((REFLECTANCE_PER_DN,) * count, (0.0,) * count, (
            f"Input scale: the raster has no scale metadata and its values look like digital numbers ({evidence}): "
            "reflectance = DN x 0.0001 assumed. If that is wrong, set the input scale (INPUT_SCALE)."))
    return InputScale((1.0,) * count, (0.0,) * count, (
        f"Input scale: the raster has no scale metadata and its values look like reflectance ({evidence}): "
        "used as they are. If that is wrong, set the input scale (INPUT_SCALE)."))


def _sample(src, band_indexes, size=64):
    """Valid values (every band non-zero and finite) of the bands, (bands, n): the smallest
    overview where the raster has overviews (Download and stack writes COGs), else size x size
    windows at the centres of the four quadrants. Either way a few blocks are decoded, whatever the
    raster's size (DN and reflectance differ a thousandfold: a few valid pixels tell them apart)."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    bands = list(band_indexes)
    overviews = src.overviews(bands[0])
    if overviews:
        shape = (len(bands), max(1, src.height // overviews[-1]), max(1, src.width // overviews[-1]))
        parts = [src.read(bands, out_shape=shape, resampling=Resampling.nearest)]
    else:
        block_rows, block_cols = src.block_shapes[0]
        parts = []
        for y in (0.25, 0.75):
            for x in (0.25, 0.75):  # each window at the start of a block: one block decoded
                row = int(src.height * y) // block_rows * block_rows
                col = int(src.width * x) // block_cols * block_cols
                parts.append(src.read(bands, window=Window(col, row, min(size, block_cols, src.width - col),
                                                           min(size, block_rows, src.height - row))))
    data = np.concatenate([part.reshape(len(bands), -1) for part in parts], axis=1).astype(np.float64)
    return data[:, np.isfinite(data).all(axis=0) & (data != 0).all(axis=0)]


class OnnxModel:
    """An onnxruntime session checked against its card."""

    def __init__(self, card, threads=0):
        # onnxruntime 1.2x on Linux writes a device id under ~/.cache/Microsoft and would send
        # usage telemetry; a plugin has no business doing either on the user's behalf.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime

        self.card = card
        path = card.weights_path()
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = int(threads)
        # Idle threads sleep instead of spinning: the engine reads, resamples and compresses on the
        # same cores while the model runs (and QGIS has threads of its own).
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=session_options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf/InvalidGraph types
            raise InputError(f"{path} is not a usable ONNX model ({type(err).__name__}: {str(err)[:200]}).") from err
        self.input = self.session.get_inputs()[0]
        self._check_input()
        self._check_output()

    def _check_input(self):
        card, shape = self.card, self.input.shape
        if self.input.type != "tensor(float)":
            raise InputError(f"Model '{card.id}' takes {self.input.type}; the plugin feeds float32 (tensor(float)).")
        if len(shape) != 4:
            raise InputError(f"Model '{card.id}' takes input of rank {len(shape)}; expected (batch, bands, rows, cols).")
        if isinstance(shape[1], int) and shape[1] != len(card.bands):
            raise InputError(f"Model '{card.id}' takes {shape[1]} input channels but its card lists "
                             f"{len(card.bands)} bands ({' '.join(card.bands)}): the card does not match the model.")
        for size in shape[2:]:
            if isinstance(size, int) and size != card.chip_size:
                raise InputError(f"Model '{card.id}' takes {size} x {size} chips but its card says {card.chip_size}.")

    def _check_output(self):
        probe = np.zeros((1, len(self.card.bands), self.card.chip_size, self.card.chip_size), dtype=np.float32)
        try:
            output = self.session.run(None, {self.input.name: probe})[0]
        except Exception as err:
            raise InputError(f"Model '{self.card.id}' fails on a {probe.shape} input: {str(err)[:200]}") from err
        expected_spatial = (self.card.chip_size, self.card.chip_size)
        if output.ndim != 4 or output.shape[2:] != expected_spatial:
            raise InputError(f"Model '{self.card.id}' returns shape {output.shape}; expected (1, classes, "
                             f"{self.card.chip_size}, {self.card.chip_size}).")
        needed = 1 + max([self.card.output.get(f"{t}_class", self.card.output.get("channel", 0))
                          for t in self.card.provides])
        if output.shape[1] < needed:
            raise InputError(f"Model '{self.card.id}' returns {output.shape[1]} channels; its card needs {needed}.")

    def probabilities(self, chips):
        """chips (N, bands, C, C) already scaled -> {target: (N, C, C) float32}."""
        logits = self.session.run(None, {self.input.name: chips})[0].astype(np.float32)
        output = self.card.output
        if output["type"] == "softmax":
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)  # per sample and pixel (FarmVibes' bug: no keepdims)
            return {target: logits[:, output[f"{target}_class"]] for target in self.card.provides}
        channel = logits[:, output.get("channel", 0)]
        return {target: 1.0 / (1.0 + np.exp(-channel)) for target in self.card.provides}


_LOADED = {}  # (weights file, its mtime, threads) -> OnnxModel: a QGIS session loads each model once


def load_model(card, threads=0):
    """The checked model, reused while its file is unchanged (loading takes about a second)."""
    path = card.weights_path()
    key = (str(path), path.stat().st_mtime_ns, int(threads), str(card.card_path), card.id, card.bands,
           card.chip_size, repr(card.output))
    if key not in _LOADED:
        if len(_LOADED) >= 4:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = OnnxModel(card, threads)
    return _LOADED[key]


def check_raster(src, card):
    """The raster must be a stack in the band order of 'Download and stack Sentinel-2'."""
    descriptions = tuple(d or "" for d in src.descriptions)
    if src.count < len(S2_BANDS):
        raise InputError(f"The raster has {src.count} bands; a Sentinel-2 stack has 12 ({' '.join(S2_BANDS)}). "
                         "Use the output of 'Download and stack Sentinel-2'.")
    if any(descriptions) and descriptions[: len(S2_BANDS)] != S2_BANDS:
        raise InputError(f"The raster's bands are {' '.join(descriptions)}; expected {' '.join(S2_BANDS)} in this "
                         "order (the output of 'Download and stack Sentinel-2').")
    return [S2_BANDS.index(band) + 1 for band in card.bands]


def chip_starts(length, chip, overlap):
    """Chip origins along one axis: the first at 0, the last flush with the end, evenly spread."""
    if length <= chip:
        return [0]
    stride = max(1, int(chip * (1 - overlap)))
    count = math.ceil((length - chip) / stride) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - chip, count)})


def blend_weights(chip):
    """Smooth, strictly positive weights that fall towards chip edges (no seams when summed)."""
    ramp = np.sin(np.pi * (np.arange(chip) + 0.5) / chip).astype(np.float32)
    return np.outer(ramp, ramp)


def compute_probabilities(raster_path, cards, outputs, options=InferenceOptions(), progress=None,
                          should_cancel=None, log=None, warn=None):
    """cards: {"cloud": card, "shadow": card}; outputs: {target: path}. Returns outputs."""
    import rasterio

    progress = progress or (lambda fraction, message: None)
    should_cancel = should_cancel or (lambda: False)
    log = log or (lambda message: None)
    warn = warn or log
    validate_options(options)
    outputs = {target: Path(path) for target, path in outputs.items()}
    for path in outputs.values():
        check_writable(path.parent)
    runs = {}  # one pass per distinct model
    for target, card in cards.items():
        if target not in card.provides:
            raise InputError(f"Model '{card.id}' does not provide {target} probability (it provides "
                             f"{', '.join(card.provides)}).")
        runs.setdefault(card.id, (card, []))[1].append(target)
    work = tempfiles.work_folder(next(iter(outputs.values())).parent, "inference")
    try:
        # GDAL's block cache defaults to 5% of RAM; whole-width strips would fill it for nothing.
        # GDAL_NUM_THREADS: all cores decode the stack's blocks (NUM_THREADS on the outputs compresses them).
        gdal_options = dict(GDAL_CACHEMAX=cogread.BLOCK_CACHE_BYTES, GDAL_NUM_THREADS="ALL_CPUS")
        with rasterio.Env(**gdal_options), rasterio.open(raster_path) as src:
            band_indexes = {card.id: check_raster(src, card) for card, _ in runs.values()}
            scale = input_scale(src, sorted({i for indexes in band_indexes.values() for i in indexes}),
                                options.input_scale)
            log(scale.how)
            if scale.warning:
                warn(scale.warning)
            for number, (card, targets) in enumerate(runs.values()):
                runs_at_once, threads_per_run = thread_layout(options.threads)
                model = load_model(card, threads_per_run)
                log(f"Model {card.id} for {' and '.join(targets)}")
                tags = {t: dict(models.probability_tags(card, t), S2MASKS_INPUT_SCALE=scale.how) for t in targets}
                counts = _predict(src, model, band_indexes[card.id], {t: work / f"{t}.tif" for t in targets}, options,
                                  scale, tags, _sub_progress(progress, number, len(runs)), should_cancel,
                                  runs_at_once)
                if not counts.valid_chips:
                    warn("The raster has no valid pixel (all nodata): every probability is nodata (NaN).")
                elif counts.failed:
                    warn(f"Model {card.id} returned no number (NaN) for {100 * counts.failed / counts.valid:.1f}% of "
                         "the pixels with data: those are nodata in the probabilities. Inputs far outside what the "
                         "model was trained on do this: check the input scale (INPUT_SCALE).")
                if should_cancel():  # nothing is published once Cancel was pressed
                    raise Cancelled("Probability computation cancelled.")
                for target in targets:
                    os.replace(work / f"{target}.tif", outputs[target])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return outputs


def _sub_progress(progress, index, count):
    return lambda fraction, message: progress((index + fraction) / count, message)


class _Reader:
    """Chips of the working grid (the model's native resolution), from disk or from memory.

    Reads whole-width strips of the raster (one chip tall, clipped to the raster, no boundless
    VRT) and averages factor x factor pixels with numpy, leaving nodata (0) out of the mean as
    GDAL's average does; streaming keeps one strip in memory, in_memory the whole image.
    """

    def __init__(self, src, band_indexes, factor, in_memory):
        self.src, self.bands, self.factor = src, band_indexes, factor
        self.height = math.ceil(src.height / factor)
        self.width = math.ceil(src.width / factor)
        self.floating = np.issubdtype(np.dtype(src.dtypes[0]), np.floating)
        # Where any band has no data, at the raster's resolution, one bit per pixel (15 MB for a
        # full tile): filled while reading, so writing the outputs needs no second read.
        self.nodata_bits = np.zeros((src.height, math.ceil(src.width / 8)), dtype=np.uint8)
        self.strip_row, self.strip = None, None
        self.image = self._read_rows(0, self.height) if in_memory else None

    def chip(self, row, col, size):
        if self.image is not None:
            part = self.image[:, row:row + size, col:col + size]
        else:
            if row != self.strip_row:
                self.strip_row, self.strip = row, self._next_strip(row, size)
            part = self.strip[:, :, col:col + size]
        out = np.zeros((len(self.bands), size, size), dtype=np.float32)
        out[:, :part.shape[1], :part.shape[2]] = part
        return out

    def _next_strip(self, row, size):
        """Rows [row, row + size): overlapping chips share rows with the previous strip, which
        are copied rather than read and averaged again."""
        rows = min(size, self.height - row)
        shared = 0
        if self.strip is not None and self.strip_row <= row:
            shared = max(0, min(self.strip_row + self.strip.shape[1] - row, rows))
        if not shared:
            return self._read_rows(row, rows)
        strip = np.empty((len(self.bands), rows, self.width), dtype=np.float32)
        strip[:, :shared] = self.strip[:, row - self.strip_row:row - self.strip_row + shared]
        if shared < rows:
            strip[:, shared:] = self._read_rows(row + shared, rows - shared)
        return strip

    def _read_rows(self, row, rows, rows_per_read=64):
        """Working-grid rows [row, row + rows), full width, as float32."""
        from rasterio.windows import Window

        rows = min(rows, self.height - row)
        out = np.empty((len(self.bands), rows, self.width), dtype=np.float32)
        for start in range(0, rows, rows_per_read):  # bounds the 10 m intermediate of in_memory
            count = min(rows_per_read, rows - start)
            f = self.factor
            top = (row + start) * f
            window = Window(0, top, self.src.width, min(count * f, self.src.height - top))
            every_band = self.src.read(window=window)  # pixel-interleaved stacks decode all bands anyway
            if self.floating:  # NaN or infinite values are nodata too
                every_band = np.where(np.isfinite(every_band), every_band, 0)
            self.nodata_bits[top:top + every_band.shape[1]] = np.packbits((every_band == 0).any(axis=0), axis=1)
            model_bands = every_band[[index - 1 for index in self.bands]]
            out[:, start:start + count] = average_blocks(model_bands, f, count, self.width)
        return out

    def nodata(self, window):
        rows = self.nodata_bits[window.row_off:window.row_off + window.height]
        return np.unpackbits(rows, axis=1, count=self.src.width)[:, window.col_off:window.col_off + window.width] \
            .astype(bool)


def average_blocks(data, factor, rows, cols):
    """Mean of factor x factor blocks of (bands, h, w) values, leaving out nodata (0); 0 where all are."""
    if factor == 1:
        return data.astype(np.float32)
    bands, height, width = data.shape
    if (height, width) != (rows * factor, cols * factor):
        padded = np.zeros((bands, rows * factor, cols * factor), dtype=data.dtype)
        padded[:, :height, :width] = data
        data = padded
    total = np.zeros((bands, rows, cols), dtype=np.float32)
    count = np.zeros((bands, rows, cols), dtype=np.uint8)
    for i in range(factor):  # factor^2 strided adds: much faster than a reduction over small axes
        for j in range(factor):
            part = data[:, i::factor, j::factor]
            total += part
            count += part != 0
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


@dataclass
class _Counts:
    valid_chips: int = 0  # chips holding a valid pixel
    valid: int = 0  # valid pixels of the working grid the model ran on (overlaps counted again)
    failed: int = 0  # of these, the pixels the model gave NaN for


def _predict(src, model, band_indexes, paths, options, scale, tags, progress, should_cancel, runs_at_once=1):
    """Runs the chips row by row; each finished row strip goes straight to the outputs at
    the raster's resolution. The model runs on `runs_at_once` batches at a time in worker threads
    (onnxruntime releases the GIL) while this thread reads and averages the next chips and blends,
    resamples and writes the finished ones, in order. Returns _Counts."""
    card = model.card
    factor = max(1, int(round(card.native_resolution / abs(src.transform.a))))
    reader = _Reader(src, band_indexes, factor, options.in_memory)
    gain, offset = scale.for_model(band_indexes, card.reflectance)
    chip = card.chip_size
    overlap = card.overlap if options.overlap is None else options.overlap
    rows = chip_starts(reader.height, chip, overlap)
    cols = chip_starts(reader.width, chip, overlap)
    weights = blend_weights(chip)
    counts = _Counts()
    jobs = [(index, batch) for index, row in enumerate(rows)
            for batch in _batches([(row, col) for col in cols], options.batch_size)]
    with ExitStack() as stack:
        sinks = {target: _RasterGridSink(stack.enter_context(_open_output(src, path, target, tags.get(target))),
                                         factor, (reader.height, reader.width), reader.nodata)
                 for target, path in paths.items()}
        strip = _Strip(list(paths), chip, reader.width)
        workers = stack.enter_context(ThreadPoolExecutor(runs_at_once, thread_name_prefix="s2masks-model"))
        pending = deque()  # (row index, batch, valid, future) in chip order: the batches given to the workers
        row_index, done = 0, 0

        def finish(job):
            nonlocal row_index, done
            index, batch, valid, future = job
            predictions = future.result()
            if index != row_index:  # the first chips of a new row: the rows above it are final
                strip.flush(rows[index], sinks, reader.height)
                row_index = index
            counts.valid += int(valid.sum())
            counts.failed += max(int((np.isnan(p) & valid).sum()) for p in predictions.values())
            for k, (r, c) in enumerate(batch):
                strip.add(r, c, {t: predictions[t][k] for t in paths}, weights, reader.height)
            done += len(batch)
            progress(done / len(rows) / len(cols), f"{card.id}: {len(rows) * len(cols)} chips through the model")

        for index, batch in jobs:
            if should_cancel():
                raise Cancelled("Probability computation cancelled.")
            chips = np.stack([reader.chip(r, c, chip) for r, c in batch])
            valid = (chips != 0).all(axis=1)
            counts.valid_chips += int(valid.any(axis=(1, 2)).sum())
            pending.append((index, batch, valid, workers.submit(_run_batch, model, card, chips, valid, gain, offset)))
            while len(pending) > runs_at_once:
                finish(pending.popleft())
        while pending:
            if should_cancel():
                raise Cancelled("Probability computation cancelled.")
            finish(pending.popleft())
        strip.flush(reader.height, sinks, reader.height)
    return counts


def _open_output(src, path, target, tags=None):
    """A float32 probability GeoTIFF on the raster's grid, nodata NaN: tiled, ZSTD with the float
    predictor, compressed on all cores; `tags` record the model card and its mask rule."""
    import rasterio

    dst = rasterio.open(path, "w", driver="GTiff", width=src.width, height=src.height, count=1, dtype="float32",
                        crs=src.crs, transform=src.transform, nodata=float("nan"), tiled=True, blockxsize=512,
                        blockysize=512, compress="ZSTD", zstd_level=1, predictor=3, BIGTIFF="IF_SAFER",
                        NUM_THREADS="ALL_CPUS")
    dst.set_band_description(1, f"{target}_probability")
    if tags:
        dst.update_tags(**tags)
    return dst


def _run_batch(model, card, chips, valid, gain=None, offset=None):
    """Probabilities for a batch; nodata pixels get NaN, chips without valid pixels skip the model.
    gain, offset (per band, or None): from the raster's values to the model's units."""
    size = chips.shape[-1]
    result = {t: np.full((len(chips), size, size), PROBABILITY_AT_NODATA, dtype=np.float32) for t in card.provides}
    run = valid.any(axis=(1, 2))
    if run.any():
        inputs = chips[run]  # a copy (boolean indexing)
        if gain is not None:
            inputs *= gain[None, :, None, None]
        if offset is not None:
            inputs += offset[None, :, None, None]
        for target, probs in model.probabilities(card.scale(inputs)).items():
            result[target][run] = probs
    for target in result:
        result[target][~valid] = PROBABILITY_AT_NODATA
    return result


def _batches(sequence, size):
    for start in range(0, len(sequence), size):
        yield sequence[start:start + size]


class _Strip:
    """Rolling weighted sums over the rows that chips still touch (2 chips tall). NaN predictions
    (nodata) carry no weight: a pixel is NaN only where no chip gave it a number."""

    def __init__(self, targets, chip, width):
        self.top = 0
        self.chip = chip
        self.width = width
        self.sums = {t: np.zeros((2 * chip, width), dtype=np.float32) for t in targets}
        self.weight = {t: np.zeros((2 * chip, width), dtype=np.float32) for t in targets}

    def add(self, row, col, probabilities, weights, height):
        r0 = row - self.top
        rows = min(self.chip, height - row)
        cols = min(self.chip, self.width - col)
        w = weights[:rows, :cols]
        for target, probs in probabilities.items():
            probs = probs[:rows, :cols]
            known = ~np.isnan(probs)
            self.weight[target][r0:r0 + rows, col:col + cols] += np.where(known, w, 0)
            self.sums[target][r0:r0 + rows, col:col + cols] += np.where(known, w * probs, 0)

    def flush(self, until, sinks, height):
        """Hands rows [top, until) to each target's sink: no later chip touches them."""
        from rasterio.windows import Window

        count = min(until, height) - self.top
        if count <= 0:
            return
        for target, sink in sinks.items():
            weight = self.weight[target][:count]
            values = np.full((count, self.width), PROBABILITY_AT_NODATA, dtype=np.float32)
            np.divide(self.sums[target][:count], weight, out=values, where=weight > 0)
            sink.write(values[None], window=Window(0, self.top, self.width, count))
        for rows in (*self.sums.values(), *self.weight.values()):  # shift up in place; numpy copes with the overlap
            rows[:-count] = rows[count:]
            rows[-count:] = 0
        self.top += count


def bilinear_sources(size, factor, source_size):
    """Bilinear up-sampling by an integer factor along one axis, pixel centres aligned (as GDAL):
    for each output pixel the two source pixels and the weight of the second, clamped at the edges."""
    position = (np.arange(size) + 0.5) / factor - 0.5
    first = np.floor(position).astype(np.int64)
    weight = (position - first).astype(np.float32)
    second = np.clip(first + 1, 0, source_size - 1)
    return np.clip(first, 0, source_size - 1), second, weight


def _lerp(first, second, weight):
    """first + (second - first) x weight; where one of the two is NaN (nodata), the other (the
    weights renormalised), so nodata does not spread into its neighbours."""
    out = first + (second - first) * weight
    missing = np.isnan(out)
    if missing.any():
        out[missing] = np.where(np.isnan(first), second, first)[missing]
    return out


class _RasterGridSink:
    """Takes finished rows of the working grid, top to bottom, and writes every raster row they
    determine: bilinear back to the raster's resolution (leaving NaN out), NaN where any band is
    nodata. Keeps only the working rows later raster rows still need."""

    def __init__(self, dst, factor, working_shape, nodata_of, rows_per_write=512):
        self.dst, self.factor, self.nodata_of = dst, factor, nodata_of
        self.working_height = working_shape[0]
        self.rows = bilinear_sources(dst.height, factor, working_shape[0])
        self.cols = bilinear_sources(dst.width, factor, working_shape[1])
        self.kept, self.kept_top = np.empty((0, working_shape[1]), np.float32), 0
        self.next_row, self.rows_per_write = 0, rows_per_write

    def write(self, values, window):
        """values (1, rows, working width): working-grid rows from window.row_off, in order."""
        self.kept = np.concatenate([self.kept, values[0]])
        finished = window.row_off + window.height
        first, second, _ = self.rows
        # Raster rows are final once the second source row of each has been received.
        end = self.dst.height if finished >= self.working_height else int(np.searchsorted(second, finished))
        for row in range(self.next_row, end, self.rows_per_write):
            self._write_rows(row, min(row + self.rows_per_write, end))
        self.next_row = max(self.next_row, end)
        if self.next_row < self.dst.height:  # drop working rows no later raster row reads
            drop = first[self.next_row] - self.kept_top
            self.kept, self.kept_top = self.kept[drop:], self.kept_top + drop

    def _write_rows(self, start, stop):
        from rasterio.windows import Window

        first, second, weight = (part[start:stop] for part in self.rows)
        if self.factor == 1:
            values = self.kept[first - self.kept_top, :self.dst.width]  # a copy (fancy indexing)
        else:
            above, below = self.kept[first - self.kept_top], self.kept[second - self.kept_top]
            rows = _lerp(above, below, weight[:, None])
            left, right, col_weight = self.cols
            values = _lerp(rows[:, left], rows[:, right], col_weight)
        window = Window(0, start, self.dst.width, stop - start)
        values[self.nodata_of(window)] = PROBABILITY_AT_NODATA
        np.clip(values, 0, 1, out=values)
        self.dst.write(values[None], window=window)
