using SpliceTransport.Interop;

namespace SpliceTransport.Splice;

/// <summary>How a transfer helper of <see cref="SplicePipe"/> stopped, and what the caller does next.</summary>
internal enum TransferStatus
{
    /// <summary>
    /// It did what it was asked. <see cref="SplicePipe.FillFrom"/>: bytes are in the pipe; drain them before
    /// reading the source again. <see cref="SplicePipe.DrainTo"/> and <see cref="SplicePipe.CopyOut"/>: the bytes
    /// asked for have left (with no limit, the pipe is empty).
    /// </summary>
    Completed,

    /// <summary>
    /// The other descriptor is not ready (EAGAIN), and it is not the pipe's fault: from a fill, the source has
    /// nothing to read; from a drain, the destination has no room. Wait for that descriptor's next edge (observed
    /// before the call), then call the same helper again.
    /// </summary>
    WouldBlock,

    /// <summary>From a fill: the source is at its end (the peer's FIN, the end of a file). The pipe is empty.</summary>
    EndOfSource,

    /// <summary>
    /// EINVAL: the kernel cannot splice this descriptor (a socket or file type without splice support, a
    /// destination opened with O_APPEND; also an offset given for a socket, a caller's mistake). From a fill, nothing was read: read the source the ordinary way. From
    /// a drain, the pipe still holds its bytes: take them out with <see cref="SplicePipe.CopyOut"/> (a file) and
    /// copy from then on.
    /// </summary>
    Unsupported,

    /// <summary>
    /// Any other errno (<see cref="TransferResult.Errno"/>): a reset (ECONNRESET, EPIPE), a full disk (ENOSPC),
    /// an I/O error. The transfer ends; a pipe that still holds bytes is closed when returned, never pooled.
    /// </summary>
    Failed,
}

/// <summary>
/// What a transfer helper did: the bytes it moved before it stopped (a file offset moves by exactly these), and
/// why it stopped. A helper can move bytes and then fail; both are reported, so no byte and no error is lost
/// (a socket reports a reset once).
/// </summary>
internal readonly record struct TransferResult(int Moved, TransferStatus Status, int Errno = 0)
{
    /// <summary>The result of a call that stopped on <paramref name="failure"/> after moving <paramref name="moved"/> bytes.</summary>
    public static TransferResult Stopped(int moved, SyscallResult failure) => failure switch
    {
        { WouldBlock: true } => new(moved, TransferStatus.WouldBlock),
        { Errno: Interop.Errno.EINVAL } => new(moved, TransferStatus.Unsupported, Interop.Errno.EINVAL),
        _ => new(moved, TransferStatus.Failed, failure.Errno),
    };

    public override string ToString() =>
        Errno == 0 ? $"{Status} after {Moved} bytes" : $"{Status} ({Interop.Errno.Name(Errno)}) after {Moved} bytes";
}
