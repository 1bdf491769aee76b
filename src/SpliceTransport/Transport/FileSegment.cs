using System.Runtime.InteropServices;

namespace SpliceTransport.Transport;

/// <summary>
/// A run of file bytes queued for the send pump, to leave the socket after exactly <see cref="Position"/>
/// bytes of the output pipe (headers and everything before them) and before any pipe byte after them.
/// The segment does not own the file descriptor: whoever queued it closes it once <see cref="Completion"/>
/// has completed, which the pump guarantees only after its last system call on it.
/// </summary>
internal sealed class FileSegment
{
    private readonly TaskCompletionSource<bool> _completion =
        new(TaskCreationOptions.RunContinuationsAsynchronously);

    public FileSegment(SafeHandle file, string path, long offset, long count, long position)
    {
        File = file;
        Path = path;
        Offset = offset;
        Remaining = count;
        Count = count;
        Position = position;
    }

    public SafeHandle File { get; }

    /// <summary>The path the file was opened from, for messages.</summary>
    public string Path { get; }

    /// <summary>The file offset of the next byte to send; sendfile advances it.</summary>
    public long Offset;

    /// <summary>Bytes still to send.</summary>
    public long Remaining;

    /// <summary>Bytes the segment holds in all.</summary>
    public long Count { get; }

    /// <summary>The number of output-pipe bytes that must leave before this segment.</summary>
    public long Position { get; }

    /// <summary>Set when the pump had to copy the bytes through user space, with the reason.</summary>
    public string? CopiedBecause { get; set; }

    /// <summary>True once all bytes were sent; false if the connection closed first. Faults if the file was truncated.</summary>
    public Task<bool> Completion => _completion.Task;

    public bool IsCompleted => _completion.Task.IsCompleted;

    public void SetSent() => _completion.TrySetResult(true);

    public void SetConnectionClosed() => _completion.TrySetResult(false);

    public void SetFailed(Exception error) => _completion.TrySetException(error);
}
