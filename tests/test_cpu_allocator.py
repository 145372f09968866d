"""Keeping freed memory: a large tensor allocated again reuses the process's pages instead of faulting in new ones."""

import subprocess
import sys

import pytest

PROBE = """
import resource
import torch
from single_image_nerf.cpu_allocator import keep_freed_memory

def page_faults_of_one_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensor = torch.ones(64 * 2**20 // 4)  # 64 MiB, above glibc's largest mmap threshold
    del tensor
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = [page_faults_of_one_tensor() for _ in range(3)]
took = keep_freed_memory()
for _ in range(16):  # the heap grows over the first few (aligned allocations do not fit the freed chunk at once)
    page_faults_of_one_tensor()
kept = [page_faults_of_one_tensor() for _ in range(3)]
print(took, min(plain), max(kept))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_freed_tensor_s_pages_are_reused():
    # In a fresh process: the setting is process-wide.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    took, plain, kept = done.stdout.split()
    assert took == "True"
    # Every 64 MiB tensor faulted in its pages anew (16384 pages of 4 KiB, or 32 huge pages where the kernel
    # hands those out); now it reuses the heap's.
    assert int(plain) >= 32
    assert int(kept) * 10 < int(plain)
