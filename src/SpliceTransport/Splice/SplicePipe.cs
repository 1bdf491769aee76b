using System.Runtime.InteropServices;
using SpliceTransport.Interop;

namespace SpliceTransport.Splice;

/// <summary>
/// One kernel pipe, the buffer every splice(2) move goes through: socket → pipe → file for uploads, socket →
/// pipe → socket for proxying, and tee(2) into a second pipe to capture what passes. It owns both ends
/// (non-blocking, close-on-exec) and knows two numbers: its <see cref="Capacity"/> and how many bytes it holds,
/// <see cref="Buffered"/>.
///
/// <see cref="Buffered"/> is counted here, spliced in minus spliced out, from the counts the kernel returns. The
/// kernel would tell too (FIONREAD on the read end), at one system call per question; the count costs nothing
/// and is exact as long as every byte moves through this class, so the ends are never used for I/O elsewhere.
/// The pool relies on it: a pipe that still holds bytes is closed, never handed to another transfer.
///
/// Threads: a rented pipe belongs to one transfer until it is returned to its <see cref="PipePool"/>. A transfer
/// is one logical thread (a pump), with one exception: a capture pipe has one producer (the forwarding loop, which
/// tees and writes into it) and one consumer (a disk thread, which drains it to the capture file) at once. So the
/// count moves by Interlocked adds, and each side reads a snapshot that only the other side can make larger
/// (producer) or smaller (consumer), never under what it needs.
/// </summary>
internal sealed partial class SplicePipe : IDisposable
{
    /// <summary>
    /// The flags of every splice and tee call. SPLICE_F_NONBLOCK always: a full or empty pipe says EAGAIN instead
    /// of blocking a loop thread (the sockets are non-blocking on their own). SPLICE_F_MORE never by default:
    /// when nothing follows, the socket holds the last segment for TCP's 200 ms cork timer (Go issue 10948).
    /// SPLICE_F_MOVE never: a no-op since Linux 2.6.21, so passing it would promise nothing.
    /// </summary>
    private const uint Flags = LibC.SPLICE_F_NONBLOCK;

    private readonly Syscalls _syscalls;
    private int _buffered;

    /// <summary>1 while rented, 0 while pooled: a second return of the same pipe is caught, not pooled twice.</summary>
    private int _rented;

    internal SplicePipe(FileDescriptorHandle readEnd, FileDescriptorHandle writeEnd, int capacity, Syscalls syscalls, PipePool owner)
    {
        ReadEnd = readEnd;
        WriteEnd = writeEnd;
        Capacity = capacity;
        _syscalls = syscalls;
        Owner = owner;
    }

    /// <summary>The read end. Exposed for sizing and tests; bytes read from it elsewhere would make <see cref="Buffered"/> wrong.</summary>
    public FileDescriptorHandle ReadEnd { get; }

    /// <summary>The write end. Exposed for sizing and tests; bytes written to it elsewhere would make <see cref="Buffered"/> wrong.</summary>
    public FileDescriptorHandle WriteEnd { get; }

    /// <summary>
    /// The capacity F_SETPIPE_SZ set, in bytes: its slots times the page size. What the pipe takes is not
    /// promised: the kernel fills slots, one per piece of page (a file entered mid-page, a socket's packets), so
    /// a full pipe may hold less. <see cref="Buffered"/>, not this, says what it holds.
    /// </summary>
    public int Capacity { get; }

    /// <summary>The bytes in the pipe: spliced or teed in, minus spliced or copied out.</summary>
    public int Buffered => Volatile.Read(ref _buffered);

    public bool IsEmpty => Buffered == 0;

    /// <summary>True once the pipe is disposed (closed by its user, by the pool, or because it held bytes when returned).</summary>
    public bool IsClosed => ReadEnd.IsClosed;

    /// <summary>The pool that made the pipe, the only one it may be returned to.</summary>
    internal PipePool Owner { get; }

    /// <summary>
    /// splice(2) from <paramref name="source"/> into the pipe: up to <paramref name="max"/> bytes from a socket
    /// (<paramref name="offset"/> null), or from a file at <paramref name="offset"/> (the file's own position when
    /// null). Invariant: <see cref="Buffered"/> grows by exactly the count returned. 0 is the source's end.
    /// EAGAIN means the source has nothing or the pipe is full: only the empty pipe of <see cref="FillFrom"/>
    /// tells the two apart.
    /// </summary>
    public SyscallResult SpliceFrom(SafeHandle source, long? offset, int max)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        SyscallResult result = _syscalls.Splice(source, offset, WriteEnd, null, (nuint)max, Flags);
        Interlocked.Add(ref _buffered, (int)result.Count);
        return result;
    }

    /// <summary>
    /// splice(2) from the pipe to <paramref name="destination"/>: up to <paramref name="max"/> of the bytes it
    /// holds, to a socket (<paramref name="offset"/> null) or to a file at <paramref name="offset"/>. Invariant:
    /// <see cref="Buffered"/> falls by exactly the count returned, and no call is made for an empty pipe (0 is
    /// returned), so EAGAIN always means the destination has no room. <paramref name="more"/> sets SPLICE_F_MORE;
    /// only for a caller that sends the next bytes itself at once, or the segment waits 200 ms.
    /// </summary>
    public SyscallResult SpliceTo(SafeHandle destination, long? offset, int max, bool more = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        int buffered = Buffered;
        if (buffered == 0)
        {
            return SyscallResult.Success(0);
        }
        uint flags = more ? Flags | LibC.SPLICE_F_MORE : Flags;
        SyscallResult result = _syscalls.Splice(ReadEnd, null, destination, offset, (nuint)Math.Min(max, buffered), flags);
        Interlocked.Add(ref _buffered, -(int)result.Count);
        return result;
    }

    /// <summary>
    /// tee(2): copies up to <paramref name="max"/> of this pipe's bytes into <paramref name="other"/> without
    /// consuming them. Invariant: this pipe's <see cref="Buffered"/> is unchanged and the other's grows by the
    /// count; no call is made for an empty pipe (0 is returned), so EAGAIN means <paramref name="other"/> is full.
    /// The count may be less than asked (the other pipe's room): consume exactly that many from this pipe
    /// (<see cref="DrainTo"/> with it as the limit) before the next tee, or the capture skips or repeats bytes.
    /// </summary>
    public SyscallResult TeeTo(SplicePipe other, int max)
    {
        ArgumentNullException.ThrowIfNull(other);
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        if (ReferenceEquals(other, this))
        {
            throw new ArgumentException("A pipe cannot tee into itself.", nameof(other));
        }
        int buffered = Buffered;
        if (buffered == 0)
        {
            return SyscallResult.Success(0);
        }
        SyscallResult result = _syscalls.Tee(ReadEnd, other.WriteEnd, (nuint)Math.Min(max, buffered), Flags);
        Interlocked.Add(ref other._buffered, (int)result.Count);
        return result;
    }

    /// <summary>
    /// write(2) of <paramref name="bytes"/> into the pipe, for bytes that reached user space (a capture of copied
    /// bytes). Non-blocking: the count may be short, and EAGAIN means the pipe is full. Invariant:
    /// <see cref="Buffered"/> grows by exactly the count.
    /// </summary>
    public SyscallResult WriteFrom(ReadOnlySpan<byte> bytes)
    {
        if (bytes.IsEmpty)
        {
            return SyscallResult.Success(0);
        }
        SyscallResult result = _syscalls.WriteFile(WriteEnd, bytes, null);
        Interlocked.Add(ref _buffered, (int)result.Count);
        return result;
    }

    /// <summary>Marks the pipe rented; false if it already was.</summary>
    internal bool TryMarkRented() => Interlocked.Exchange(ref _rented, 1) == 0;

    /// <summary>Marks the pipe returned; false if it was not rented (a second return).</summary>
    internal bool TryMarkReturned() => Interlocked.Exchange(ref _rented, 0) == 1;

    /// <summary>Closes both ends; whatever the pipe held is gone.</summary>
    public void Dispose()
    {
        ReadEnd.Dispose();
        WriteEnd.Dispose();
    }
}
