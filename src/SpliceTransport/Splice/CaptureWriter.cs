using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using SpliceTransport.Interop;
using SpliceTransport.Transport;
using SpliceTransport.Files;

namespace SpliceTransport.Splice;

/// <summary>
/// Captures one forwarded direction into a file, exactly the bytes that went that way, without ever slowing the
/// forward: tee(2) copies a fill's page references into a capture pipe (no byte copied, nothing consumed), and a
/// disk thread drains that pipe into the file. Bytes that reached user space (copied exchanges, the bytes
/// buffered before the takeover) are written into the capture pipe with one non-blocking write(2).
///
/// Lossy by design. The forward makes one non-blocking call per transfer for the capture and never waits for it:
/// when the capture pipe is full (the disk is slower than the network), the bytes are dropped and their stream
/// range recorded. At the end the file holds the captured bytes in stream order, and <c>PATH.gaps</c> (written
/// only when something was dropped) lists the missing ranges, one <c>offset length</c> line each, in stream
/// offsets. A file error turns the capture off; the forward goes on.
///
/// Threads: one producer (the direction: the caller's thread before the takeover, then the loop) and one consumer
/// (a disk thread) at a time. The producer owns the stream offset and the captured ranges, the consumer the file
/// offset; the pipe's count is shared through Interlocked adds, and the "drain scheduled" flag is handed over with
/// full fences on both sides, so no wake-up is lost: the consumer clears the flag and looks at the pipe again; the
/// producer adds its bytes and then looks at the flag. Either sees the other's write. Drains are chained, each
/// after the one before, so that two never run at once and the end waits for all of them by waiting for the last;
/// each is one pass over the pipe, so a busy capture takes its turn on the disk threads with the other work there.
/// </summary>
internal sealed class CaptureWriter : IAsyncDisposable
{
    /// <summary>What <c>PATH</c> of the capture's gap list is: the capture's path with this after it.</summary>
    public const string GapsSuffix = ".gaps";

    /// <summary>The buffer of the copy fallback, for a file system whose files splice(2) cannot write (EINVAL).</summary>
    private const int CopyOutBufferSize = 64 * 1024;

    private readonly string _path;
    private readonly SafeFileHandle _file;
    private readonly PipePool _pool;
    private readonly DiskThreads _diskThreads;
    private readonly SpliceMetrics _metrics;
    private readonly ILogger _logger;
    private readonly SplicePipe? _pipe;
    private readonly Func<bool> _drain;

    /// <summary>Producer: the stream ranges that went into the capture pipe, adjacent ones merged.</summary>
    private readonly List<(long Offset, long Length)> _captured = [];

    /// <summary>Producer: the stream bytes offered so far, captured or dropped.</summary>
    private long _offered;

    /// <summary>Producer: the drain last scheduled, chained after every earlier one; the end waits for it.</summary>
    private Task _lastDrain = Task.CompletedTask;

    private int _drainScheduled;

    /// <summary>Consumer: the bytes written to the file, its next offset.</summary>
    private long _written;

    private bool _copyOut;
    private byte[]? _copyOutBuffer;
    private volatile bool _failed;
    private bool _disposed;

    private CaptureWriter(string path, SafeFileHandle file, PipePool pool, SplicePipe? pipe, DiskThreads diskThreads, SpliceMetrics metrics, ILogger logger)
    {
        _path = path;
        _file = file;
        _pool = pool;
        _pipe = pipe;
        _diskThreads = diskThreads;
        _metrics = metrics;
        _logger = logger;
        _drain = Drain;
        _failed = pipe is null;
    }

    /// <summary>
    /// Creates (or truncates) <paramref name="path"/> and removes a gap list left beside it by an earlier capture.
    /// Throws what <see cref="File.OpenHandle"/> throws for a path that cannot be written, naming it. A capture pipe
    /// the pool refuses turns the capture off at once (every byte is then dropped and counted), logged.
    /// </summary>
    public static CaptureWriter Open(string path, string connectionId, PipePool pool, DiskThreads diskThreads, SpliceMetrics metrics, ILogger logger)
    {
        File.Delete(path + GapsSuffix); // An earlier capture's list would describe this one wrongly.
        SafeFileHandle file = File.OpenHandle(path, FileMode.Create, FileAccess.Write, FileShare.Read);
        SplicePipe? pipe;
        try
        {
            if (!pool.TryRent(out pipe, out PipeRefusal refusal))
            {
                Log.CaptureUnavailable(logger, connectionId, path, refusal.ToString());
            }
        }
        catch
        {
            file.Dispose();
            throw;
        }
        return new CaptureWriter(path, file, pool, pipe, diskThreads, metrics, logger);
    }

    /// <summary>The bytes written to the file (after <see cref="DisposeAsync"/>: all of them).</summary>
    public long CapturedBytes => Volatile.Read(ref _written);

    /// <summary>
    /// The bytes offered but not in the file (after <see cref="DisposeAsync"/>). Offered means taken off the
    /// source: with the captured bytes, the direction's bytes, plus any a dead destination lost.
    /// </summary>
    public long DroppedBytes => _offered - CapturedBytes;

    /// <summary>
    /// Captures the first <paramref name="count"/> bytes of <paramref name="source"/>, which holds exactly the fill
    /// just made (nothing drained yet): one non-blocking tee(2). Producer only.
    /// </summary>
    public void Tee(SplicePipe source, int count)
    {
        long captured = 0;
        if (!_failed)
        {
            SyscallResult teed = source.TeeTo(_pipe!, count);
            // EAGAIN: the capture pipe is full. Any other error: the bytes are dropped all the same.
            captured = teed.Count;
        }
        Offer(count, captured);
    }

    /// <summary>Captures bytes that passed through user space: one non-blocking write(2). Producer only.</summary>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        long captured = 0;
        if (!_failed && !bytes.IsEmpty)
        {
            captured = _pipe!.WriteFrom(bytes).Count;
        }
        Offer(bytes.Length, captured);
    }

    /// <summary>Records that the next <paramref name="count"/> stream bytes were offered, the first <paramref name="captured"/> of them taken.</summary>
    private void Offer(long count, long captured)
    {
        if (captured > 0)
        {
            if (_captured.Count > 0 && _captured[^1] is var (offset, length) && offset + length == _offered)
            {
                _captured[^1] = (offset, length + captured);
            }
            else
            {
                _captured.Add((_offered, captured));
            }
            ScheduleDrain();
        }
        _offered += count;
    }

    private void ScheduleDrain()
    {
        if (Interlocked.Exchange(ref _drainScheduled, 1) != 0)
        {
            return; // A drain is running or queued, and will look at the pipe again before it stops.
        }
        _lastDrain = DrainAfterAsync(_lastDrain);
    }

    /// <summary>Drains once <paramref name="previous"/> has ended, pass after pass while the producer keeps up the flag.</summary>
    private async Task DrainAfterAsync(Task previous)
    {
        await previous.ConfigureAwait(false);
        try
        {
            while (await _diskThreads.RunAsync(_drain).ConfigureAwait(false))
            {
            }
        }
        catch (ObjectDisposedException)
        {
            _failed = true; // The transport is stopping: no more capture.
        }
    }

    /// <summary>
    /// One pass of the consumer, on a disk thread: splices the capture pipe into the file until it is empty, then
    /// clears the flag and looks once more (see the class comment). True: more came, and the flag is taken again,
    /// for another pass. A regular file never says EAGAIN, so this never waits for anything but the disk. Any
    /// failure turns the capture off (logged); the forward never learns of it.
    /// </summary>
    private bool Drain()
    {
        SplicePipe pipe = _pipe!;
        try
        {
            while (!pipe.IsEmpty && !_failed)
            {
                TransferResult moved = _copyOut
                    ? pipe.CopyOut(_file, _written, _copyOutBuffer ??= new byte[CopyOutBufferSize], out _) // A capture drops what fails.
                    : pipe.DrainTo(_file, _written);
                Volatile.Write(ref _written, _written + moved.Moved);
                if (moved.Status == TransferStatus.Unsupported)
                {
                    _copyOut = true; // A file system splice(2) cannot write to: the bytes are still in the pipe.
                }
                else if (moved.Status == TransferStatus.Failed)
                {
                    Fail(new SyscallException("splice", moved.Errno, _path));
                }
            }
        }
        catch (Exception ex)
        {
            Fail(ex);
        }
        Volatile.Write(ref _drainScheduled, 0);
        Interlocked.MemoryBarrier();
        return !pipe.IsEmpty && !_failed && Interlocked.Exchange(ref _drainScheduled, 1) == 0;
    }

    private void Fail(Exception error)
    {
        _failed = true;
        Log.CaptureFailed(_logger, _path, error);
    }

    /// <summary>
    /// After the direction has ended (no producer left): waits for the drain, closes the file, writes the gap list
    /// when anything was dropped, and gives the capture pipe back (closed if a failure left bytes in it).
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        try
        {
            await _lastDrain.ConfigureAwait(false);
        }
        finally
        {
            if (_pipe is not null)
            {
                _pool.Return(_pipe);
            }
            _file.Dispose();
        }
        if (DroppedBytes > 0)
        {
            _metrics.CaptureDropped(DroppedBytes);
            await File.WriteAllTextAsync(_path + GapsSuffix, FormatGaps(), Encoding.ASCII).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The stream ranges not in the file, one <c>offset length</c> line each: everything offered, less the first
    /// <see cref="CapturedBytes"/> bytes of the captured ranges (a failed file holds a prefix of what was teed).
    /// </summary>
    private string FormatGaps()
    {
        var gaps = new StringBuilder();
        long inFile = CapturedBytes;
        long next = 0; // The first stream offset not yet accounted for.
        foreach ((long offset, long length) in _captured)
        {
            long kept = Math.Min(length, inFile);
            inFile -= kept;
            if (kept == 0)
            {
                break;
            }
            AppendGap(gaps, next, offset - next);
            next = offset + kept;
        }
        AppendGap(gaps, next, _offered - next);
        return gaps.ToString();
    }

    private static void AppendGap(StringBuilder gaps, long offset, long length)
    {
        if (length > 0)
        {
            gaps.Append(offset.ToString(CultureInfo.InvariantCulture)).Append(' ').Append(length.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
    }
}
