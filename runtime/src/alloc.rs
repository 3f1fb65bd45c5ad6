//! Keeping freed memory for reuse. A training step frees and allocates the same large buffers
//! (activations, gradients, workspaces) every time; glibc's malloc hands buffers above 128 KiB
//! back to the kernel and maps them again, so every step pays for page faults and for the
//! kernel zeroing the pages (in perf, page faults and page clearing were 6% of the small
//! ResNet benchmark's samples, and libc's memset and memmove another 13%).
//! [`keep_freed_memory`] raises glibc's mmap and trim thresholds once per process, so that
//! freed buffers up to 32 MiB stay in the heap for the next step, as PyTorch's caching
//! allocator keeps them: the benchmark's page faults fell from 622 k to 35 k in the same 20 s.
//! The process's resident size then stays near its peak. Elsewhere than glibc it does
//! nothing.

/// Raises glibc's mmap threshold to its maximum (32 MiB) and its trim threshold to 1 GiB, once
/// per process. [`crate::Trainer`] calls it when it is built and [`crate::seed::cpu`] (the device
/// a `#[lightning_module]`'s `new` builds on) when it makes a device, so that layers used
/// outside a trainer run at its speed (without it, a small ResNet's steps took twice as long);
/// call it yourself when you build layers on a `Cpu` of your own.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only sets allocator parameters; called once, before the
            // trainer's own allocations.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        });
    }
}
