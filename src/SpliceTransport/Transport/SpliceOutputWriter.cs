using System.IO.Pipelines;
using System.Runtime.InteropServices;

using SpliceTransport.Engine;
using SpliceTransport.Files;

namespace SpliceTransport.Transport;

/// <summary>
/// The <see cref="PipeWriter"/> Kestrel writes responses into. Normally it passes everything to the output
/// pipe. For a zero-copy file it does two more things, which together keep Kestrel's byte accounting right
/// without copying a byte:
/// <list type="number">
/// <item><see cref="EnqueueFile"/> records the file at the current pipe position, so the send pump sends
/// exactly the bytes written before it, then the file, then whatever is written after it.</item>
/// <item>It then swallows the next <c>count</c> bytes advanced through it: Kestrel's body writer counts them
/// (so Content-Length checks and keep-alive work), while <see cref="GetMemory"/> hands out scratch memory
/// that nobody ever reads.</item>
/// </list>
/// A flush that follows a queued file completes only when the file's bytes counted so far have left the
/// socket, so back-pressure and Kestrel's MinResponseDataRate timing see the real send, not the bookkeeping.
/// </summary>
internal sealed class SpliceOutputWriter : PipeWriter
{
    /// <summary>
    /// The scratch memory, for writing a file's count through Kestrel: <see cref="GetSpan"/> hands out this same
    /// memory while a file is being counted, so Kestrel's copy of it onto itself is skipped.
    /// </summary>
    public static ReadOnlyMemory<byte> Scratch => ScratchMemory.Shared.Memory;

    private readonly PipeWriter _pipe;
    private readonly PipeReader _pumpReader;
    private readonly Queue<FileSegment> _files = new();
    private long _pipeBytesWritten;
    private long _bytesToSwallow;
    private FileSegment? _lastFile;
    private bool _pumpStopped;
    private bool _fileQueuedSinceFlush;
    private bool _fileExpected;

    public SpliceOutputWriter(PipeWriter pipe, PipeReader pumpReader)
    {
        _pipe = pipe;
        _pumpReader = pumpReader;
        _wakePump = pumpReader.CancelPendingRead;
    }

    /// <summary>Wakes the pump for a file queued behind bytes already committed (a cached delegate: no allocation per file).</summary>
    private readonly Action _wakePump;

    /// <summary>Bytes of the current file Kestrel has still to advance through this writer.</summary>
    public long BytesToSwallow => _bytesToSwallow;

    /// <summary>
    /// Says that the next bytes flushed are the headers of a file response. Until the file is queued (or
    /// the expectation is taken back), flushes do not commit bytes to the pipe: they only make sure every
    /// byte has reached this writer. The headers then reach the pump together with the file, which costs
    /// one wake-up of the loop instead of two and lets them share a TCP segment.
    /// </summary>
    public void ExpectFile() => _fileExpected = true;

    /// <summary>
    /// Takes back <see cref="ExpectFile"/> (no file followed: a failure before it was queued). The bytes it
    /// held are committed now: Kestrel makes no further flush for a response whose count is already met.
    /// </summary>
    public void CancelFileExpectation()
    {
        if (!_fileExpected)
        {
            return;
        }
        _fileExpected = false;
        if (_pipe.UnflushedBytes > 0)
        {
            // Only headers are held, far below any pause threshold, so this completes at once.
            _ = _pipe.FlushAsync();
        }
    }

    /// <summary>
    /// Queues <paramref name="count"/> bytes of <paramref name="file"/> from <paramref name="offset"/> at the
    /// current position, and starts swallowing that many bytes. The caller must have awaited a flush, so that
    /// no bytes written before this call are still buffered above this writer.
    /// </summary>
    public FileSegment EnqueueFile(SafeHandle file, string path, long offset, long count, ResidencyMemo? residency = null)
    {
        if (_bytesToSwallow != 0)
        {
            throw new InvalidOperationException($"The previous file's {_bytesToSwallow} bytes have not been written through the response body yet.");
        }
        var segment = new FileSegment(file, path, offset, count, _pipeBytesWritten, residency);
        lock (_files)
        {
            if (_pumpStopped)
            {
                segment.SetConnectionClosed();
                return segment;
            }
            _files.Enqueue(segment);
        }
        _bytesToSwallow = count;
        _lastFile = segment;
        _fileExpected = false;
        _fileQueuedSinceFlush = true;
        return segment;
    }

    /// <summary>The file the pump must send next, if any. Pump only.</summary>
    public FileSegment? PeekFile()
    {
        lock (_files)
        {
            return _files.TryPeek(out FileSegment? segment) ? segment : null;
        }
    }

    /// <summary>Removes the file <see cref="PeekFile"/> returned, once it is done with. Pump only.</summary>
    public void DequeueFile()
    {
        lock (_files)
        {
            _files.Dequeue();
        }
    }

    /// <summary>The pump has stopped: queued files and any file queued later complete as not sent.</summary>
    public void StopFiles()
    {
        lock (_files)
        {
            _pumpStopped = true;
            while (_files.TryDequeue(out FileSegment? segment))
            {
                segment.SetConnectionClosed();
            }
        }
    }

    public override Memory<byte> GetMemory(int sizeHint = 0) =>
        _bytesToSwallow > 0 ? ScratchMemory.Shared.Memory[..ScratchLength(sizeHint)] : _pipe.GetMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) =>
        _bytesToSwallow > 0 ? ScratchMemory.Shared.GetSpan()[..ScratchLength(sizeHint)] : _pipe.GetSpan(sizeHint);

    private int ScratchLength(int sizeHint)
    {
        if (sizeHint > ScratchMemory.Size)
        {
            // Kestrel never asks for more than a block; a caller that does would not fit the scratch buffer.
            throw new ArgumentOutOfRangeException(nameof(sizeHint), sizeHint, $"At most {ScratchMemory.Size} bytes can be requested while a file is being sent.");
        }
        return (int)Math.Min(ScratchMemory.Size, Math.Max(_bytesToSwallow, sizeHint));
    }

    public override void Advance(int bytes)
    {
        if (_bytesToSwallow > 0)
        {
            if (bytes > _bytesToSwallow)
            {
                throw new InvalidOperationException($"{bytes} bytes were advanced while only {_bytesToSwallow} bytes of the file remained to be counted.");
            }
            _bytesToSwallow -= bytes;
            return;
        }
        _pipe.Advance(bytes);
        _pipeBytesWritten += bytes;
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (_fileExpected)
        {
            return default; // Held for the file: see ExpectFile.
        }
        ValueTask<FlushResult> flush;
        if (_fileQueuedSinceFlush)
        {
            // The flush that hands the pump a file: the pump runs inside it, on this thread (see SendScheduler),
            // so a file that fits the socket has left before the flush returns. A file queued behind bytes that
            // are all committed already gets no wake-up from the flush (swallowed bytes never reach the pipe), so
            // the pump is woken explicitly.
            _fileQueuedSinceFlush = false;
            flush = SendScheduler.FlushInline(_pipe, _pipe.UnflushedBytes == 0 ? _wakePump : null, cancellationToken);
        }
        else
        {
            flush = _pipe.FlushAsync(cancellationToken);
        }
        FileSegment? file = _lastFile;
        if (file is null || file.IsCompleted)
        {
            return flush;
        }
        // Wait for the file only as far as Kestrel has counted it: Kestrel times each flush against
        // MinResponseDataRate by the bytes written since the last one, so a flush must not wait for more.
        return WaitForFileAsync(flush, file, unwritten: _bytesToSwallow, cancellationToken);
    }

    private static async ValueTask<FlushResult> WaitForFileAsync(ValueTask<FlushResult> flush, FileSegment file, long unwritten, CancellationToken cancellationToken)
    {
        FlushResult result = await flush.ConfigureAwait(false);
        bool sent;
        try
        {
            sent = await file.WhenRemainingAtMost(unwritten).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (FileSendException)
        {
            // Not Kestrel's to see: its flusher would log it as an unexpected error, and the body feature logs
            // it once already (from the segment). For Kestrel the output has simply ended: the pump aborted it.
            sent = false;
        }
        return sent ? result : new FlushResult(isCanceled: false, isCompleted: true);
    }

    public override void CancelPendingFlush() => _pipe.CancelPendingFlush();

    public override void Complete(Exception? exception = null) => _pipe.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => _pipe.CompleteAsync(exception);

    public override bool CanGetUnflushedBytes => _pipe.CanGetUnflushedBytes;

    public override long UnflushedBytes => _pipe.UnflushedBytes;
}
