"""Feeding a GPU: (a) host-to-device bandwidth through the Loader's pinned ring vs a raw pinned
``copy_(non_blocking=True)`` of the same bytes; (b) a small convnet's training step fed by the
Loader (``device="cuda"``, uint8 over the link, normalised on the device) vs fed by a batch already
resident on the GPU, both with the host running ahead and with it waiting for every step
(``loss.item()``). Targets: ring >= 90% of raw pinned bandwidth; loader-fed step <= 1.05x the
resident step while the loader outpaces the model. Needs torch with CUDA.

    python benchmarks/bench_gpu.py [--images 2048] [--batch 256] [--workers N] [--width 1]
"""
import argparse
import os
import statistics
import tempfile
import time


def median_of(fn, runs):
    return statistics.median(fn() for _ in range(runs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--width", type=int, default=1, help="the convnet's channels x this (a slower model)")
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("bench_gpu: torch sees no CUDA device; nothing to measure")
        return
    import fastload as fl
    from fastload.synthetic import make_image_folder
    root = make_image_folder(os.path.join(tempfile.mkdtemp(), "d"), classes=8, per_class=args.images // 8,
                             size=(240, 320))
    src = fl.ImageFolder(root)
    dev = torch.device("cuda")
    print(f"== {torch.cuda.get_device_name(0)}; {args.images} images, batch {args.batch}, {args.workers} workers")

    # (a) bandwidth: the same uint8 bytes, raw pinned copies vs the Loader's ring
    batch = torch.empty((args.batch, 224, 224, 3), dtype=torch.uint8).pin_memory()
    dst = torch.empty(batch.shape, dtype=batch.dtype, device=dev)
    n = 50

    def raw():
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            dst.copy_(batch, non_blocking=True)
        torch.cuda.synchronize()
        return n * batch.numel() / (time.perf_counter() - t) / 1e9
    from fastload.memory.pool import SlotPool
    from fastload.pipeline.device import CudaBackend
    from fastload.pipeline.fields import Output
    backend = CudaBackend(dev)
    lease = SlotPool([Output("image", (224, 224, 3), "uint8")], args.batch, 1, pin=True).acquire()
    host = lease.arrays["image"]     # one of the ring's slots: memory the pool page-locked itself
    host[:] = batch.numpy()
    target = backend.target()

    def ring():
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            out, ev = backend.copy_async(host, target)
            backend.wait(ev, [out])
        torch.cuda.synchronize()
        return n * batch.numel() / (time.perf_counter() - t) / 1e9
    raw(), ring()
    r_raw, r_ring = median_of(raw, args.runs), median_of(ring, args.runs)
    print(f"  raw pinned copy_      {r_raw:8.2f} GB/s")
    print(f"  fastload ring copy    {r_ring:8.2f} GB/s   ratio {r_ring / r_raw:.2f} (target >= 0.90)")

    # (b) a training step fed by the loader vs by a resident batch
    c1, c2, c3 = 64 * args.width, 128 * args.width, 256 * args.width
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, c1, 7, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(c1, c2, 3, 2, 1), torch.nn.ReLU(),
        torch.nn.Conv2d(c2, c3, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(c3, 8)).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y, sync=False):
        """One training step; ``sync``: the host then waits for it (loss.item(), as logging does)."""
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if sync:
            loss.item()
    loader = fl.Loader(src, batch_size=args.batch, shuffle=True, workers=args.workers, prefetch=4, drop_last=True,
                       transforms=[fl.RandomResizedCrop(224), fl.RandomHorizontalFlip(),
                                   fl.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])],
                       output="torch", device="cuda", dtype="float16")
    x0, y0 = next(iter(loader))          # stays on the GPU: the resident batch

    def resident(sync):
        step(x0.float(), y0)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(len(loader) - 1):
            step(x0.float(), y0, sync)
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / (len(loader) - 1)

    def fed(sync):
        """Steps after an epoch's first batch (its start-up is time to first batch, not the feed).
        ``sync``: the host waits for each step (loss.item(), as logging or a GradScaler does), so
        only a copy queued before the loop asks for the batch overlaps the step before."""
        it = iter(loader)
        x, y = next(it)
        step(x.float(), y)
        torch.cuda.synchronize()
        t = time.perf_counter()
        k = 0
        for x, y in it:
            step(x.float(), y, sync)
            k += 1
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / k
    times = {}
    for sync in (False, True):
        resident(sync), fed(sync)
        times[sync] = median_of(lambda: resident(sync), 3), median_of(lambda: fed(sync), 3)
    t_res = times[False][0]
    t = time.perf_counter()
    k = sum(len(x) for x, _ in loader)
    torch.cuda.synchronize()
    feed, demand = k / (time.perf_counter() - t), args.batch / t_res
    for sync, (t_res_s, t_fed_s) in times.items():
        how = ", loss.item() each step" if sync else ""
        print(f"  step, resident batch{how}  {t_res_s * 1e3:8.2f} ms")
        print(f"  step, fed by loader{how}   {t_fed_s * 1e3:8.2f} ms   ratio {t_fed_s / t_res_s:.3f} (target <= 1.05 "
              f"when the loader outpaces the model)")
    print(f"  loader alone          {feed:8.0f} img/s; model alone {demand:8.0f} img/s"
          + ("" if feed > demand else "  (the loader is the slower of the two: the step ratio then measures it, "
                                     "not the feed; raise --workers or --width)"))


if __name__ == "__main__":
    main()
