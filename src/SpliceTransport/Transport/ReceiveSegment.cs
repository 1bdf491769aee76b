using System.Runtime.InteropServices;

namespace SpliceTransport.Transport;

/// <summary>
/// The mirror of <see cref="FileSegment"/> on the input side: the next <see cref="Count"/> bytes of the socket,
/// the rest of a request body, to be spliced by the receive pump into <see cref="File"/> from <see cref="FileOffset"/>
/// (socket → kernel pipe → file), never entering user space. For each run of bytes that has reached the file the
/// pump writes as many placeholder bytes (zeros) into the connection's input, so Kestrel's body reader counts the body
/// as ever (Content-Length, MaxRequestBodySize, MinRequestBodyDataRate, keep-alive, the next pipelined request) while
/// the reader of the body skips them (see <see cref="Published"/>).
///
/// The segment may stop before its count (<see cref="FallbackReason"/>): the pump met a pipe refusal or a socket that
/// cannot splice, the file failed (<see cref="Failure"/>), or its reader asked (<see cref="RequestStop"/>). Every byte
/// already taken off the socket then reaches the input as a real byte, in order, and the rest of the body follows it
/// through the ordinary receive path: the reader writes what is real and skips what was published. A file that cannot
/// take a splice (O_APPEND) does not stop it: the pump copies each pipe load out into the file instead, and says so.
///
/// Threads: the pump (the loop, and the disk threads for the file writes) changes it; the body's reader reads
/// <see cref="Published"/>, <see cref="Failure"/> and the tasks from its own thread.
/// </summary>
internal sealed class ReceiveSegment
{
    private readonly TaskCompletionSource<bool> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _fileReleased = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _fileLock = new();
    private bool _writing;
    private volatile bool _stopRequested;
    private long _published;
    private long _spliced;

    public ReceiveSegment(SafeHandle file, string path, long fileOffset, long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(fileOffset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        File = file;
        Path = path;
        FileOffset = fileOffset;
        Count = count;
    }

    /// <summary>The file the body goes into; the segment does not own it. Close it only after <see cref="FileReleased"/>.</summary>
    public SafeHandle File { get; }

    /// <summary>The file's path, for messages.</summary>
    public string Path { get; }

    /// <summary>The file offset of the segment's first byte.</summary>
    public long FileOffset { get; }

    /// <summary>The body bytes the segment covers: all that is left of the body when it starts.</summary>
    public long Count { get; }

    /// <summary>
    /// Placeholder bytes written into the input so far: the first <see cref="Published"/> body bytes after the segment
    /// started are in the file already. It is raised before the placeholders are flushed, and fixed before any real
    /// byte follows them, so a reader that reads it after each read of the body knows which of the bytes it got are
    /// placeholders.
    /// </summary>
    public long Published => Interlocked.Read(ref _published);

    /// <summary>Bytes that went from the socket into the file through a kernel pipe (the upload's SplicedBytes).</summary>
    public long Spliced => Interlocked.Read(ref _spliced);

    /// <summary>Body bytes the pump has still to take off the socket.</summary>
    public long Remaining => Count - Published;

    /// <summary>
    /// Why not all of the segment was spliced into the file (a value of <c>UploadFallbackReasons</c>): it stopped
    /// early, or its bytes were copied out of the pipe into the file; null when they all were.
    /// </summary>
    public string? FallbackReason { get; private set; }

    /// <summary>
    /// The file's error (a full disk, say) that stopped the segment, naming the errno and the path; or null. Set before
    /// the bytes the failed write left in the pipe go to the input as real bytes, so the reader, woken by them, sees it.
    /// </summary>
    public Exception? Failure { get; private set; }

    /// <summary>
    /// True once every byte of the count is in the file and published; false if the segment stopped early or the
    /// connection closed first. Never faults: a file error is <see cref="Failure"/>.
    /// </summary>
    public Task<bool> Completion => _completion.Task;

    /// <summary>Completes when the pump will make no more system call on <see cref="File"/>: the file may be closed.</summary>
    public Task FileReleased => _fileReleased.Task;

    public bool IsStopRequested => _stopRequested;

    /// <summary>
    /// The reader asks the pump to stop (it was canceled, or failed): the pump stops before its next file write, and
    /// what it has taken off the socket goes to the input as real bytes. <see cref="FileReleased"/> completes at once
    /// when no write is in flight. Any thread.
    /// </summary>
    public void RequestStop()
    {
        lock (_fileLock)
        {
            _stopRequested = true;
            if (_writing)
            {
                return; // The pump releases the file when that write returns.
            }
        }
        _fileReleased.TrySetResult();
    }

    /// <summary>The pump is about to write to the file: false if a stop was asked for (then it must not).</summary>
    public bool TryBeginWrite()
    {
        lock (_fileLock)
        {
            if (_stopRequested)
            {
                return false;
            }
            _writing = true;
            return true;
        }
    }

    /// <summary>The pump's file write returned.</summary>
    public void EndWrite()
    {
        lock (_fileLock)
        {
            _writing = false;
            if (!_stopRequested)
            {
                return;
            }
        }
        _fileReleased.TrySetResult();
    }

    /// <summary>Records <paramref name="count"/> bytes written to the file, about to be published as placeholders.</summary>
    public void Publish(long count, bool spliced)
    {
        Interlocked.Add(ref _published, count);
        if (spliced)
        {
            Interlocked.Add(ref _spliced, count);
        }
    }

    /// <summary>Not all of the segment is spliced, for <paramref name="reason"/> (with the file's <paramref name="failure"/>, if that was it). Pump only.</summary>
    public void FallBack(string reason, Exception? failure = null)
    {
        FallbackReason ??= reason;
        Failure ??= failure;
    }

    /// <summary>The pump is done with the segment: completes it, and releases the file. Pump only, once.</summary>
    public void End(bool connectionClosed)
    {
        _fileReleased.TrySetResult();
        _completion.TrySetResult(Published == Count && !connectionClosed);
    }
}
