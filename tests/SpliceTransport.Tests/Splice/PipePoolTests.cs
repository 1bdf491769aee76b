using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using SpliceTransport.Interop;
using SpliceTransport.Splice;
using SpliceTransport.Tests.Infrastructure;
using Xunit.Abstractions;

namespace SpliceTransport.Tests.Splice;

/// <summary>The pipe pool on real pipes: reuse, what is never pooled, the cap, sizing, refusals and their counts.</summary>
public sealed class PipePoolTests(ITestOutputHelper output) : IDisposable
{
    private readonly PoolMetrics _metrics = new();
    private readonly TestFiles _files = new();

    public void Dispose()
    {
        _metrics.Dispose();
        _files.Dispose();
    }

    [Fact]
    public void AReturnedEmptyPipeIsRentedAgain()
    {
        using PipePool pool = _metrics.CreatePool();
        Assert.True(pool.TryRent(out SplicePipe? first, out _));
        int readFd = first.ReadEnd.Fd;
        Assert.Equal((1, 0), (_metrics.Used, _metrics.Idle));

        pool.Return(first);
        Assert.False(first.IsClosed);
        Assert.Equal(1, pool.Pooled);
        Assert.Equal((0, 1), (_metrics.Used, _metrics.Idle));

        Assert.True(pool.TryRent(out SplicePipe? second, out _));
        Assert.Same(first, second);
        Assert.Equal(readFd, second.ReadEnd.Fd);
        Assert.Equal(0, pool.Pooled);
        Assert.Equal((1, 0), (_metrics.Used, _metrics.Idle));
        pool.Return(second);
    }

    [Fact]
    public void APipeThatStillHoldsBytesIsClosedNotPooled()
    {
        string file = _files.Create("source.bin", 10_000);
        using var source = File.OpenHandle(file);
        using PipePool pool = _metrics.CreatePool();
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        int readFd = pipe.ReadEnd.Fd;
        string? target = Kernel.DescriptorTarget(readFd);
        Assert.StartsWith("pipe:[", target);

        Assert.Equal(TransferStatus.Completed, pipe.FillFrom(source, 0, 1000).Status);
        Assert.Equal(1000, pipe.Buffered);
        Assert.Equal(1000, Kernel.BytesInPipe(pipe));
        pool.Return(pipe);

        Assert.True(pipe.IsClosed);
        Assert.True(pipe.WriteEnd.IsClosed);
        // The number may have been reused by another test's descriptor since, but never for this pipe again.
        Assert.NotEqual(target, Kernel.DescriptorTarget(readFd));
        Assert.Equal(0, pool.Pooled);
        Assert.Equal((0, 0), (_metrics.Used, _metrics.Idle));

        Assert.True(pool.TryRent(out SplicePipe? next, out _));
        Assert.NotSame(pipe, next);
        Assert.True(next.IsEmpty);
        pool.Return(next);
    }

    [Fact]
    public void NoMoreThanTheCapWaitIdleAndTheRestAreClosed()
    {
        using PipePool pool = _metrics.CreatePool(maxPooled: 2);
        var pipes = new List<SplicePipe>();
        for (int i = 0; i < 5; i++)
        {
            Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
            pipes.Add(pipe);
        }
        Assert.Equal(5, _metrics.Used);

        pipes.ForEach(pool.Return);

        Assert.Equal(2, pool.Pooled);
        Assert.Equal(3, pipes.Count(p => p.IsClosed));
        Assert.Equal((0, 2), (_metrics.Used, _metrics.Idle));
    }

    [Fact]
    public void APoolCappedAtZeroClosesEveryReturn()
    {
        using PipePool pool = _metrics.CreatePool(maxPooled: 0);
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        pool.Return(pipe);
        Assert.True(pipe.IsClosed);
        Assert.Equal((0, 0), (_metrics.Used, _metrics.Idle));
    }

    [Fact]
    public void TheDefaultPipeIsOneMebibyteOrPipeMaxSize()
    {
        using PipePool pool = _metrics.CreatePool();
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        int expected = Math.Min(PipePool.DefaultPipeSize, PipeLimits.MaxSize);
        Assert.Equal(expected, pipe.Capacity);
        Assert.Equal(expected, Syscalls.Default.GetPipeSize(pipe.ReadEnd).Count);
        output.WriteLine($"pipe-max-size {PipeLimits.MaxSize}, default pool pipe {pipe.Capacity}");
        pool.Return(pipe);
    }

    [Theory]
    [InlineData(256 * 1024, 256 * 1024)]
    [InlineData(64 * 1024, 64 * 1024)]
    [InlineData(3000, 4096)] // The kernel rounds up to a power-of-two number of pages.
    [InlineData(1, 4096)]
    public void F_SETPIPE_SZGivesTheRequestedSize(int requested, int expected)
    {
        using PipePool pool = _metrics.CreatePool(pipeSize: requested);
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        Assert.Equal(expected, pipe.Capacity);
        Assert.Equal(expected, Syscalls.Default.GetPipeSize(pipe.WriteEnd).Count);
        pool.Return(pipe);
    }

    [Fact]
    public void ANewPipeIsSixteenPagesBeforeItIsSized()
    {
        Assert.True(Syscalls.Default.CreatePipe(out FileDescriptorHandle? readEnd, out FileDescriptorHandle? writeEnd).IsSuccess);
        using (readEnd)
        using (writeEnd)
        {
            Assert.Equal(16 * Environment.SystemPageSize, Syscalls.Default.GetPipeSize(readEnd!).Count);
        }
    }

    [Fact]
    public void ARequestAbovePipeMaxSizeIsCappedAtIt()
    {
        using PipePool pool = _metrics.CreatePool(pipeSize: 4 * PipeLimits.MaxSize);
        Assert.Equal(PipeLimits.MaxSize, pool.PipeSize);
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        Assert.Equal(PipeLimits.MaxSize, pipe.Capacity);
        Assert.Equal(PipeLimits.MaxSize, Syscalls.Default.GetPipeSize(pipe.ReadEnd).Count);
        pool.Return(pipe);
    }

    /// <summary>
    /// The real EPERM: a pool that believes pipe-max-size is twice what it is asks the kernel for too much. Only
    /// CAP_SYS_RESOURCE may go past the limit; without it the pipe is refused, closed and counted.
    /// </summary>
    [Fact]
    public void AboveTheRealPipeMaxSizeTheKernelSaysEpermAndThePipeIsRefused()
    {
        int tooLarge = 2 * PipeLimits.MaxSize;
        using PipePool pool = _metrics.CreatePool(pipeSize: tooLarge, maxPipeSize: tooLarge);
        bool rented = pool.TryRent(out SplicePipe? pipe, out PipeRefusal refusal);
        if (Kernel.HasSysResource())
        {
            output.WriteLine("CAP_SYS_RESOURCE held: the kernel allows pipes past pipe-max-size.");
            Assert.True(rented);
            Assert.Equal(tooLarge, pipe!.Capacity);
            pool.Return(pipe);
            return;
        }
        Assert.False(rented);
        Assert.Null(pipe);
        Assert.Equal(new PipeRefusal(PipeRefusalReasons.PipeSizeLimit, "fcntl(F_SETPIPE_SZ)", Errno.EPERM), refusal);
        Assert.Equal(1, _metrics.Refused(PipeRefusalReasons.PipeSizeLimit));
        Assert.Equal((0, 0), (_metrics.Used, _metrics.Idle));
    }

    [Theory]
    [InlineData(Errno.EMFILE, PipeRefusalReasons.DescriptorLimit)]
    [InlineData(Errno.ENFILE, PipeRefusalReasons.SystemDescriptorLimit)]
    [InlineData(Errno.ENOMEM, PipeRefusalReasons.OutOfMemory)]
    [InlineData(Errno.EINVAL, PipeRefusalReasons.Error)]
    public void Pipe2FailuresAreRefusedWithTheirReasonAndCounted(int errno, string reason)
    {
        var faults = new FaultInjectingSyscalls { CreatePipeErrno = errno };
        using PipePool pool = _metrics.CreatePool(faults);

        Assert.False(pool.TryRent(out SplicePipe? pipe, out PipeRefusal refusal));
        Assert.False(pool.TryRent(out _, out _));

        Assert.Null(pipe);
        Assert.Equal(new PipeRefusal(reason, "pipe2", errno), refusal);
        Assert.Equal(2, _metrics.Refused(reason));
        Assert.Equal(2, _metrics.AllRefused);
        Assert.Equal(0, _metrics.Used);
        Assert.Contains(Errno.Name(errno), refusal.ToString());

        // Descriptors come back: the next rental succeeds.
        faults.CreatePipeErrno = null;
        Assert.True(pool.TryRent(out pipe, out _));
        pool.Return(pipe);
    }

    [Fact]
    public void AnEpermFromF_SETPIPE_SZClosesTheNewPipeAndRefusesIt()
    {
        var faults = new FaultInjectingSyscalls { SetPipeSizeErrno = Errno.EPERM };
        using PipePool pool = _metrics.CreatePool(faults);

        Assert.False(pool.TryRent(out SplicePipe? pipe, out PipeRefusal refusal));

        Assert.Null(pipe);
        Assert.Equal(PipeRefusalReasons.PipeSizeLimit, refusal.Reason);
        Assert.Equal(Errno.EPERM, refusal.Errno);
        Assert.Equal(1, faults.PipesCreated);
        Assert.Equal(0, faults.OpenPipes()); // Both ends of the refused pipe were closed.
        Assert.Equal(1, _metrics.Refused(PipeRefusalReasons.PipeSizeLimit));
        Assert.Equal((0, 0), (_metrics.Used, _metrics.Idle));
        Assert.Equal(Errno.EPERM, refusal.ToException().Errno);
    }

    [Fact]
    public void APipeReturnedTwiceOrToAnotherPoolIsRejected()
    {
        using PipePool pool = _metrics.CreatePool();
        using PipePool other = _metrics.CreatePool();
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));

        Assert.Throws<ArgumentException>(() => other.Return(pipe));
        pool.Return(pipe);
        Assert.Throws<InvalidOperationException>(() => pool.Return(pipe));
        Assert.Equal(1, pool.Pooled);
        Assert.Equal((0, 1), (_metrics.Used, _metrics.Idle));
    }

    [Fact]
    public void AClosedPipeIsNotPooled()
    {
        using PipePool pool = _metrics.CreatePool();
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        pipe.Dispose();
        pool.Return(pipe);
        Assert.Equal(0, pool.Pooled);
        Assert.Equal((0, 0), (_metrics.Used, _metrics.Idle));
    }

    [Fact]
    public void DisposeClosesIdlePipesAndLaterReturnsClose()
    {
        PipePool pool = _metrics.CreatePool();
        Assert.True(pool.TryRent(out SplicePipe? idle, out _));
        Assert.True(pool.TryRent(out SplicePipe? rented, out _));
        pool.Return(idle);

        pool.Dispose();
        Assert.True(idle.IsClosed);
        Assert.False(rented.IsClosed);
        pool.Return(rented);
        Assert.True(rented.IsClosed);
        Assert.Equal((0, 0), (_metrics.Used, _metrics.Idle));
        Assert.Throws<ObjectDisposedException>(() => pool.TryRent(out _, out _));
    }

    /// <summary>Threads renting and returning at once: no pipe is ever held by two of them, and the counts balance.</summary>
    [Fact]
    public async Task ConcurrentRentersNeverShareAPipe()
    {
        const int Threads = 4;
        const int Rounds = 2000;
        using PipePool pool = _metrics.CreatePool(pipeSize: 4096, maxPooled: 4);
        var holders = new ConcurrentDictionary<SplicePipe, int>();
        int shared = 0;
        var tasks = Enumerable.Range(0, Threads).Select(t => Task.Run(() =>
        {
            for (int i = 0; i < Rounds; i++)
            {
                Assert.True(pool.TryRent(out SplicePipe? pipe, out PipeRefusal refusal), refusal.ToString());
                if (!holders.TryAdd(pipe, t))
                {
                    Interlocked.Increment(ref shared);
                }
                Thread.SpinWait(50);
                holders.TryRemove(pipe, out _);
                pool.Return(pipe);
            }
        }));
        await Task.WhenAll(tasks);

        Assert.Equal(0, shared);
        Assert.InRange(pool.Pooled, 1, 4);
        Assert.Equal(0, _metrics.Used);
        Assert.Equal(pool.Pooled, _metrics.Idle);
    }

    [Fact]
    public void ThePipeInstrumentsHaveTheirNamesTypesAndUnits()
    {
        Assert.IsType<UpDownCounter<long>>(_metrics.Recorder.Instruments[SpliceMetrics.PipeCountName]);
        Assert.Equal("{pipe}", _metrics.Recorder.Instruments[SpliceMetrics.PipeCountName].Unit);
        Assert.IsType<Counter<long>>(_metrics.Recorder.Instruments[SpliceMetrics.PipeRefusedName]);
        Assert.Equal("{pipe}", _metrics.Recorder.Instruments[SpliceMetrics.PipeRefusedName].Unit);
        Assert.Equal("splice.pipe.count", SpliceMetrics.PipeCountName);
        Assert.Equal("splice.pipe.refused", SpliceMetrics.PipeRefusedName);
    }

    [Fact]
    public void OutOfRangeSettingsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => _metrics.CreatePool(pipeSize: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => _metrics.CreatePool(maxPooled: -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => _metrics.CreatePool(maxPooled: PipePool.MaxPooledLimit + 1));
    }
}
