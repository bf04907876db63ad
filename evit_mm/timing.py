"""Wall-clock timing with warm-up, medians and spread, and the machine's matmul peak."""
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch


def synchronize(device: str) -> None:
    if str(device).startswith('cuda'):
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: str) -> float:
    """Seconds one call of ``fn`` takes, with the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_calls(fn: Callable[[], object], iters: int, warmup: int, device: str = 'cpu',
               progress: bool = False) -> List[float]:
    """Seconds per call of ``fn`` over ``iters`` timed calls after ``warmup`` discarded ones."""
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(warmup + iters)
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            seconds = _timed(fn, device)
            if i >= warmup:
                times.append(seconds)
            if bar is not None:
                bar.update()
    if bar is not None:
        print()
    return times


def summarize(times: Sequence[float], batch: int = 1) -> Dict[str, float]:
    """Per image: median, quartiles, min and max in milliseconds, and the FPS (images per
    second) of the median, for calls that each process ``batch`` images."""
    ms = sorted(t * 1000 / batch for t in times)
    quartiles = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    median = statistics.median(ms)
    return dict(fps=1000.0 / median, ms_per_img=median, ms_p25=quartiles[0], ms_p75=quartiles[2],
                ms_min=ms[0], ms_max=ms[-1], iters=len(ms), batch_size=batch,
                spread_pct=100.0 * (quartiles[2] - quartiles[0]) / median)


def matmul_peak_gflops(device: str = 'cpu', size: int = 2048, iters: int = 10) -> float:
    """Best dense float32 matmul throughput (GFLOP/s, 2 FLOPs per multiply-add)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    times = time_calls(lambda: torch.mm(a, b), iters=iters, warmup=2, device=device)
    return 2 * size ** 3 / min(times) / 1e9


# CPU flags that decide reduced-precision speed: bf16 and int8 (VNNI) units, AMX tiles
PRECISION_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_bf16',
                   'amx_int8')
# environment variables that cap the instructions oneDNN (OpenVINO's and torch's; DNNL_ is its
# older prefix), torch's own kernels and MKL use, e.g. to measure an AVX2-only CPU on a newer one
ISA_CAPS = ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA', 'ATEN_CPU_CAPABILITY',
            'MKL_ENABLE_INSTRUCTIONS')


def _cpuinfo(key: str) -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(key):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return ''


def cpu_name() -> str:
    return _cpuinfo('model name') or platform.processor() or platform.machine()


def cpu_flags() -> List[str]:
    """Which of :data:`PRECISION_FLAGS` this CPU has."""
    flags = set(_cpuinfo('flags').split())
    return [flag for flag in PRECISION_FLAGS if flag in flags]


# what oneDNN (OpenVINO's CPU plugin) may use under ONEDNN_MAX_CPU_ISA, of PRECISION_FLAGS
# (oneDNN's AVX-512 levels do not include AVX-VNNI; caps from AMX up allow everything)
_AVX512_BF16 = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16')
ONEDNN_ISA_FLAGS = {
    'SSE41': (), 'AVX': (), 'AVX2': ('avx2',), 'AVX2_VNNI': ('avx2', 'avx_vnni'),
    'AVX2_VNNI_2': ('avx2', 'avx_vnni'), 'AVX512_CORE': ('avx2', 'avx512f'),
    'AVX512_CORE_VNNI': ('avx2', 'avx512f', 'avx512_vnni'), 'AVX512_CORE_BF16': _AVX512_BF16,
    'AVX512_CORE_FP16': _AVX512_BF16, 'AVX10_1_512': _AVX512_BF16}


def isa_cap() -> Optional[Tuple[str, str]]:
    """``(variable, instruction set)`` oneDNN is capped at (``ONEDNN_MAX_CPU_ISA``, else its
    older name ``DNNL_MAX_CPU_ISA``), if any."""
    for name in ISA_CAPS[:2]:
        if os.environ.get(name):
            return name, os.environ[name]
    return None


def usable_flags(flags: List[str]) -> List[str]:
    """``flags`` less those :func:`isa_cap` keeps oneDNN (OpenVINO) from using."""
    cap = isa_cap()
    allowed = ONEDNN_ISA_FLAGS.get(cap[1].upper(), PRECISION_FLAGS) if cap else PRECISION_FLAGS
    return [flag for flag in flags if flag in allowed]


def caps_text(env: dict) -> str:
    """The instruction caps an :func:`environment` record names, as ``NAME=VALUE, ...`` ('' if
    none)."""
    return ', '.join(f'{key}={value}' for key, value in env.get('isa_caps', {}).items())


def environment(device: str) -> dict:
    """What a timing depends on: device, threads, library versions."""
    cuda = str(device).startswith('cuda')
    name = torch.cuda.get_device_name(device) if cuda else cpu_name()
    found = dict(device=str(device), device_name=name, cpu_flags=cpu_flags(),
                 threads=torch.get_num_threads(), torch=torch.__version__)
    caps = {key: os.environ[key] for key in ISA_CAPS if os.environ.get(key)}
    if caps:  # the libraries were told to use fewer instructions than the flags list
        found['isa_caps'] = caps
    return found


def time_interleaved(fns: Dict[str, Callable[[], object]], rounds: int, warmup: int = 2,
                     device: str = 'cpu', grad_mode: Callable = torch.inference_mode
                     ) -> Dict[str, List[float]]:
    """Seconds per call of each function, timed in alternation so drift hits all alike, under
    ``grad_mode`` (``torch.no_grad`` as mmengine's test loop)."""
    times: Dict[str, List[float]] = {name: [] for name in fns}
    with grad_mode():
        for r in range(warmup + rounds):
            for name, fn in fns.items():
                seconds = _timed(fn, device)
                if r >= warmup:
                    times[name].append(seconds)
    return times
