using System.Net.Sockets;
using System.Runtime.InteropServices;
using SpliceTransport.Interop;
using SpliceTransport.Splice;
using SpliceTransport.Tests.Infrastructure;
using Xunit.Abstractions;

namespace SpliceTransport.Tests.Splice;

/// <summary>
/// The transfer helpers on real descriptors: loopback TCP sockets (non-blocking on our side), pipes and files.
/// poll(2) stands in for the event loop's edges; the loops below are what the upload and proxy pumps will do.
/// </summary>
public sealed class PipeTransferTests(ITestOutputHelper output) : IDisposable
{
    private readonly PoolMetrics _metrics = new();
    private readonly TestFiles _files = new();

    public void Dispose()
    {
        _metrics.Dispose();
        _files.Dispose();
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4095)]
    [InlineData(1024 * 1024 + 3)]
    [InlineData(64L * 1024 * 1024)]
    public async Task SocketToPipeToFileKeepsEveryByte(long size)
    {
        using PipePool pool = _metrics.CreatePool();
        using var pair = LoopbackPair.Create();
        string path = Path.Combine(_files.Root, $"upload-{size}.bin");
        Task<string> sent = pair.SendFromRemoteAsync(size, seed: (int)(size % int.MaxValue));
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));

        long written;
        using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write))
        {
            written = Upload(pipe, pair, file);
        }

        pool.Return(pipe);
        Assert.False(pipe.IsClosed); // Empty at the end, so pooled.
        Assert.Equal(size, written);
        Assert.Equal(size, new FileInfo(path).Length);
        Assert.Equal(await sent, TestFiles.Sha256(path));
    }

    /// <summary>An upload takes its body and not one byte of what follows it (the next pipelined request).</summary>
    [Fact]
    public async Task AFillNeverTakesMoreThanItsLimit()
    {
        const int Body = 100_000;
        const int Following = 5;
        using PipePool pool = _metrics.CreatePool();
        using var pair = LoopbackPair.Create();
        Task<string> sent = pair.SendFromRemoteAsync(Body + Following, seed: 7);
        await sent; // All of it is in our receive queue (or on its way) before the upload starts.
        string path = Path.Combine(_files.Root, "limited.bin");
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));

        using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write))
        {
            Assert.Equal(Body, Upload(pipe, pair, file, limit: Body));
        }
        pool.Return(pipe);

        // What is left is the following bytes, then the FIN.
        byte[] rest = new byte[64];
        int left = 0;
        int n;
        do
        {
            pair.Wait(SelectMode.SelectRead);
            n = pair.Local.Receive(rest, left, rest.Length - left, SocketFlags.None);
            left += n;
        }
        while (n > 0);
        Assert.Equal(Following, left);
        Assert.Equal(Body, new FileInfo(path).Length);
    }

    [Fact]
    public async Task SocketToPipeToSocketKeepsEveryByteAndWaitsForTheDestination()
    {
        const long Size = 16L * 1024 * 1024 + 1;
        using PipePool pool = _metrics.CreatePool();
        using var source = LoopbackPair.Create();
        // Fixed buffers (no autotuning), far smaller than the transfer, and a peer that starts reading only once
        // the destination was full: the drain must meet EAGAIN, and resume.
        using var destination = LoopbackPair.Create(localSendBuffer: 256 * 1024, remoteReceiveBuffer: 64 * 1024);
        var firstFull = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task<string> sent = source.SendFromRemoteAsync(Size, seed: 11);
        Task<(string Sha256, long Length)> received = firstFull.Task.ContinueWith(_ => destination.ReceiveAtRemoteAsync(), TaskScheduler.Default).Unwrap();
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));

        long moved = 0;
        int destinationFull = 0;
        while (true)
        {
            TransferResult fill = pipe.FillFrom(source.Handle, null, int.MaxValue);
            if (fill.Status == TransferStatus.WouldBlock)
            {
                // The pipe is empty: the only wait a pump may make on its source.
                Assert.True(pipe.IsEmpty);
                source.Wait(SelectMode.SelectRead);
                continue;
            }
            if (fill.Status == TransferStatus.EndOfSource)
            {
                break;
            }
            Assert.Equal(TransferStatus.Completed, fill.Status);
            while (!pipe.IsEmpty)
            {
                TransferResult drain = pipe.DrainTo(destination.Handle, null);
                moved += drain.Moved;
                if (drain.Status == TransferStatus.WouldBlock)
                {
                    // The pipe holds bytes: the only wait it allows is for their destination.
                    destinationFull++;
                    firstFull.TrySetResult();
                    Assert.Equal(pipe.Buffered, Kernel.BytesInPipe(pipe));
                    destination.Wait(SelectMode.SelectWrite);
                    continue;
                }
                Assert.Equal(TransferStatus.Completed, drain.Status);
            }
        }
        destination.Local.Shutdown(SocketShutdown.Send);
        pool.Return(pipe);

        (string sha, long length) = await received.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(Size, moved);
        Assert.Equal(Size, length);
        Assert.Equal(await sent, sha);
        output.WriteLine($"{Size} bytes, destination full {destinationFull} times");
    }

    /// <summary>
    /// tee(2) into a smaller second pipe, so it copies less than the first holds: the first gives up exactly what
    /// was teed each round, and both copies come out whole.
    /// </summary>
    [Fact]
    public async Task TeeIntoASecondPipeThenDrainingBothGivesTwoWholeCopies()
    {
        const long Size = 4L * 1024 * 1024 + 5;
        using PipePool pool = _metrics.CreatePool();
        using PipePool capturePool = _metrics.CreatePool(pipeSize: 16 * 1024);
        using var source = LoopbackPair.Create();
        Task<string> sent = source.SendFromRemoteAsync(Size, seed: 13);
        string mainPath = Path.Combine(_files.Root, "main.bin");
        string capturePath = Path.Combine(_files.Root, "capture.bin");
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        Assert.True(capturePool.TryRent(out SplicePipe? capture, out _));

        int partialTees = 0;
        using (var main = File.OpenHandle(mainPath, FileMode.CreateNew, FileAccess.Write))
        using (var copy = File.OpenHandle(capturePath, FileMode.CreateNew, FileAccess.Write))
        {
            long mainOffset = 0;
            long copyOffset = 0;
            while (true)
            {
                TransferResult fill = pipe.FillFrom(source.Handle, null, int.MaxValue);
                if (fill.Status == TransferStatus.WouldBlock)
                {
                    source.Wait(SelectMode.SelectRead);
                    continue;
                }
                if (fill.Status == TransferStatus.EndOfSource)
                {
                    break;
                }
                while (!pipe.IsEmpty)
                {
                    int before = pipe.Buffered;
                    SyscallResult teed = pipe.TeeTo(capture, int.MaxValue);
                    Assert.True(teed.IsSuccess && teed.Count > 0, $"tee: {teed}");
                    Assert.Equal(before, pipe.Buffered); // tee consumes nothing.
                    Assert.Equal((int)teed.Count, capture.Buffered);
                    Assert.Equal(capture.Buffered, Kernel.BytesInPipe(capture));
                    partialTees += teed.Count < before ? 1 : 0;

                    TransferResult first = pipe.DrainTo(main, mainOffset, max: (int)teed.Count);
                    Assert.Equal(new TransferResult((int)teed.Count, TransferStatus.Completed), first);
                    mainOffset += first.Moved;

                    TransferResult second = capture.DrainTo(copy, copyOffset);
                    Assert.Equal(TransferStatus.Completed, second.Status);
                    Assert.True(capture.IsEmpty);
                    copyOffset += second.Moved;
                }
            }
        }
        pool.Return(pipe);
        capturePool.Return(capture);

        string expected = await sent;
        Assert.Equal(expected, TestFiles.Sha256(mainPath));
        Assert.Equal(expected, TestFiles.Sha256(capturePath));
        Assert.True(partialTees > 0, "The 16 KiB capture pipe should have taken less than the main pipe held at least once.");
        output.WriteLine($"{partialTees} partial tees");
    }

    [Fact]
    public async Task AnEmptySourceSaysWouldBlockAndItsFinSaysEndOfSource()
    {
        using PipePool pool = _metrics.CreatePool();
        using var pair = LoopbackPair.Create();
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));

        Assert.Equal(new TransferResult(0, TransferStatus.WouldBlock), pipe.FillFrom(pair.Handle, null, int.MaxValue));
        Assert.True(pipe.IsEmpty);

        string sent = await pair.SendFromRemoteAsync(10, seed: 1);
        pair.Wait(SelectMode.SelectRead);
        Assert.Equal(new TransferResult(10, TransferStatus.Completed), pipe.FillFrom(pair.Handle, null, int.MaxValue));
        Assert.Equal(10, Kernel.BytesInPipe(pipe));
        Assert.Throws<InvalidOperationException>(() => pipe.FillFrom(pair.Handle, null, int.MaxValue));

        using (SafeHandle scratch = OpenScratch(out string path))
        {
            Assert.Equal(new TransferResult(10, TransferStatus.Completed), pipe.CopyOut(scratch, 0, new byte[10], out _));
            Assert.Equal(sent, TestFiles.Sha256(path));
        }
        Assert.Equal(new TransferResult(0, TransferStatus.EndOfSource), pipe.FillFrom(pair.Handle, null, int.MaxValue));
        pool.Return(pipe);
    }

    /// <summary>A full pipe says EAGAIN while the socket still has bytes: the EAGAIN that FillFrom rules out.</summary>
    [Fact]
    public async Task AFullPipeSaysWouldBlockWhileTheSourceStillHasBytes()
    {
        using PipePool pool = _metrics.CreatePool(pipeSize: 4096);
        using var pair = LoopbackPair.Create();
        Task<string> sent = pair.SendFromRemoteAsync(1024 * 1024, seed: 3);
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        Assert.Equal(4096, pipe.Capacity);
        pair.Wait(SelectMode.SelectRead);

        SyscallResult result = default;
        for (int i = 0; i < 1000; i++)
        {
            result = pipe.SpliceFrom(pair.Handle, null, int.MaxValue);
            if (!result.IsSuccess)
            {
                break;
            }
        }

        Assert.True(result.WouldBlock, $"splice into a full pipe: {result}");
        Assert.True(pipe.Buffered > 0);
        Assert.Equal(pipe.Buffered, Kernel.BytesInPipe(pipe));
        Assert.True(pair.Local.Available > 0, "The socket still holds bytes, so the EAGAIN was the pipe's.");
        // One slot: what it took depends on how the socket's buffer is cut into pages, not on the capacity.
        output.WriteLine($"a pipe of capacity {pipe.Capacity} took {pipe.Buffered} bytes from the socket");
        Assert.Throws<InvalidOperationException>(() => pipe.FillFrom(pair.Handle, null, int.MaxValue));

        pool.Return(pipe);
        Assert.True(pipe.IsClosed); // It held bytes.
        pair.Local.Close();
        try
        {
            await sent; // Either all of it fitted in the socket buffers, or the close resets the blocked sender.
        }
        catch (SocketException)
        {
        }
    }

    /// <summary>
    /// From a file into the pipe, then out to a socket whose peer does not read: EAGAIN means the destination is
    /// full, the bytes wait in the pipe, and the drain resumes where it stopped once the peer reads.
    /// </summary>
    [Fact]
    public async Task AFullDestinationSaysWouldBlockAndTheBytesWaitInThePipe()
    {
        const int Size = 1024 * 1024;
        string path = _files.Create("file-source.bin", Size + 100);
        using PipePool pool = _metrics.CreatePool();
        using var pair = LoopbackPair.Create(localSendBuffer: 4096, remoteReceiveBuffer: 4096);
        using var source = File.OpenHandle(path);
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));

        // From a file at an offset (its own position is not used) until the pipe is full: a file always has bytes
        // before its end, so EAGAIN is the pipe's. One page per slot, the first entered 100 bytes in: the slots
        // run out 100 bytes short of the capacity, which counts slots, not bytes.
        long offset = 100;
        SyscallResult read;
        while ((read = pipe.SpliceFrom(source, offset, int.MaxValue)).IsSuccess)
        {
            Assert.True(read.Count > 0, "The file ended before the pipe was full.");
            offset += read.Count;
        }
        Assert.True(read.WouldBlock, $"splice from the file: {read}");
        int held = pipe.Buffered;
        Assert.Equal(offset - 100, held);
        Assert.InRange(held, pipe.Capacity - Environment.SystemPageSize, pipe.Capacity);
        output.WriteLine($"a pipe of capacity {pipe.Capacity} took {held} bytes of the file from offset 100");

        TransferResult first = pipe.DrainTo(pair.Handle, null);
        Assert.Equal(TransferStatus.WouldBlock, first.Status);
        Assert.InRange(first.Moved, 0, held - 1);
        Assert.Equal(held - first.Moved, pipe.Buffered);
        Assert.Equal(pipe.Buffered, Kernel.BytesInPipe(pipe));
        output.WriteLine($"{first.Moved} bytes left before the destination was full");

        Task<(string Sha256, long Length)> received = pair.ReceiveAtRemoteAsync();
        long moved = first.Moved;
        while (!pipe.IsEmpty)
        {
            pair.Wait(SelectMode.SelectWrite);
            TransferResult next = pipe.DrainTo(pair.Handle, null);
            Assert.NotEqual(TransferStatus.Failed, next.Status);
            moved += next.Moved;
        }
        pair.Local.Shutdown(SocketShutdown.Send);
        pool.Return(pipe);

        (string sha, long length) = await received.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(held, moved);
        Assert.Equal(held, length);
        Assert.Equal(TestFiles.Sha256(path, 100, held), sha);
    }

    /// <summary>
    /// splice refuses a destination opened with O_APPEND (EINVAL): the bytes stay in the pipe, CopyOut writes them
    /// with write(2), which appends.
    /// </summary>
    [Fact]
    public void AnAppendOnlyFileIsUnsupportedAndCopyOutAppendsThePipesBytes()
    {
        const int Size = 100_000;
        string sourcePath = _files.Create("append-source.bin", Size);
        string destinationPath = Path.Combine(_files.Root, "append-destination.bin");
        File.WriteAllText(destinationPath, "prefix");
        using PipePool pool = _metrics.CreatePool();
        using var source = File.OpenHandle(sourcePath);
        using FileDescriptorHandle destination = Kernel.Open(destinationPath, LibC.O_WRONLY | LibC.O_APPEND);
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        Assert.Equal(TransferStatus.Completed, pipe.FillFrom(source, 0, Size).Status);
        int held = pipe.Buffered;

        Assert.Equal(new TransferResult(0, TransferStatus.Unsupported, Errno.EINVAL), pipe.DrainTo(destination, null));
        Assert.Equal(held, pipe.Buffered);

        Assert.Equal(new TransferResult(held, TransferStatus.Completed), pipe.CopyOut(destination, null, new byte[4096], out _));
        Assert.True(pipe.IsEmpty);
        Assert.Equal(0, Kernel.BytesInPipe(pipe));
        pool.Return(pipe);

        byte[] written = File.ReadAllBytes(destinationPath);
        Assert.Equal("prefix"u8.ToArray(), written[..6]);
        Assert.Equal(File.ReadAllBytes(sourcePath)[..held], written[6..]);
    }

    /// <summary>CopyOut at an offset writes with pwrite, in as many chunks as its buffer makes.</summary>
    [Fact]
    public void CopyOutWritesAtTheOffsetInChunks()
    {
        const int Size = 50_000;
        string sourcePath = _files.Create("copy-source.bin", Size);
        using PipePool pool = _metrics.CreatePool();
        using var source = File.OpenHandle(sourcePath);
        using SafeHandle destination = OpenScratch(out string destinationPath);
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        Assert.Equal(new TransferResult(Size, TransferStatus.Completed), pipe.FillFrom(source, 0, Size));

        Assert.Equal(new TransferResult(Size, TransferStatus.Completed), pipe.CopyOut(destination, 1000, new byte[777], out _));
        pool.Return(pipe);
        Assert.False(pipe.IsClosed);

        byte[] written = File.ReadAllBytes(destinationPath);
        Assert.Equal(1000 + Size, written.Length);
        Assert.Equal(File.ReadAllBytes(sourcePath), written[1000..]);
    }

    /// <summary>
    /// An offset for a socket is a caller's mistake, and the kernel answers it with EINVAL (ESPIPE before Linux
    /// 6.x): the same errno as "cannot splice this", so it reads as Unsupported. Nothing moves either way.
    /// </summary>
    [Fact]
    public void AnOffsetOnASocketIsRefusedWithEinvalAndMovesNothing()
    {
        using PipePool pool = _metrics.CreatePool();
        using var pair = LoopbackPair.Create();
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        Assert.Equal(new TransferResult(0, TransferStatus.Unsupported, Errno.EINVAL), pipe.FillFrom(pair.Handle, 0, 100));
        Assert.True(pipe.IsEmpty);
        pool.Return(pipe);
    }

    [Fact]
    public async Task AResetSourceFailsWithConnectionReset()
    {
        using PipePool pool = _metrics.CreatePool();
        using var pair = LoopbackPair.Create();
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        pair.Remote.LingerState = new LingerOption(true, 0);
        pair.Remote.Close(); // RST
        pair.Wait(SelectMode.SelectRead);
        await Task.Yield();

        TransferResult result = pipe.FillFrom(pair.Handle, null, int.MaxValue);
        Assert.Equal(TransferStatus.Failed, result.Status);
        Assert.True(Errno.IsConnectionReset(result.Errno), result.ToString());
        pool.Return(pipe);
    }

    [Fact]
    public void AnEmptyPipeMovesNothingWithoutASystemCall()
    {
        using PipePool pool = _metrics.CreatePool();
        using var pair = LoopbackPair.Create();
        Assert.True(pool.TryRent(out SplicePipe? pipe, out _));
        Assert.True(pool.TryRent(out SplicePipe? other, out _));
        Assert.Equal(0, pipe.SpliceTo(pair.Handle, null, 100).Count);
        Assert.Equal(0, pipe.TeeTo(other, 100).Count);
        Assert.Equal(new TransferResult(0, TransferStatus.Completed), pipe.DrainTo(pair.Handle, null));
        Assert.Throws<ArgumentException>(() => pipe.TeeTo(pipe, 100));
        pool.Return(pipe);
        pool.Return(other);
    }

    /// <summary>
    /// The upload pump's cycle: fill the empty pipe from the socket, drain it all to the file at its offset, and
    /// wait for the socket only when the pipe is empty. Returns the bytes written.
    /// </summary>
    private static long Upload(SplicePipe pipe, LoopbackPair source, SafeHandle file, long limit = long.MaxValue)
    {
        long offset = 0;
        while (offset < limit)
        {
            TransferResult fill = pipe.FillFrom(source.Handle, null, (int)Math.Min(int.MaxValue, limit - offset));
            switch (fill.Status)
            {
                case TransferStatus.WouldBlock:
                    Assert.True(pipe.IsEmpty);
                    source.Wait(SelectMode.SelectRead);
                    continue;
                case TransferStatus.EndOfSource:
                    return offset;
                case TransferStatus.Completed:
                    Assert.Equal(fill.Moved, pipe.Buffered);
                    Assert.Equal(pipe.Buffered, Kernel.BytesInPipe(pipe));
                    TransferResult drain = pipe.DrainTo(file, offset);
                    Assert.Equal(new TransferResult(fill.Moved, TransferStatus.Completed), drain); // A file never blocks.
                    Assert.True(pipe.IsEmpty);
                    offset += drain.Moved;
                    continue;
                default:
                    Assert.Fail($"fill: {fill}");
                    break;
            }
        }
        return offset;
    }

    private SafeHandle OpenScratch(out string path)
    {
        path = Path.Combine(_files.Root, "scratch-" + Guid.NewGuid().ToString("N"));
        return File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write);
    }
}
