using SpliceTransport.Interop;

namespace SpliceTransport.Splice;

/// <summary>
/// Why the pool gave no pipe: one of the <see cref="PipeRefusalReasons"/>, the system call that failed
/// (<c>pipe2</c> or <c>fcntl(F_SETPIPE_SZ)</c>) and its errno, for the caller's log line.
/// </summary>
internal readonly record struct PipeRefusal(string Reason, string Syscall, int Errno)
{
    /// <summary>The reason a refusal of <paramref name="syscall"/> with <paramref name="errno"/> is counted under.</summary>
    public static PipeRefusal From(string syscall, int errno) => new(errno switch
    {
        Interop.Errno.EMFILE => PipeRefusalReasons.DescriptorLimit,
        Interop.Errno.ENFILE => PipeRefusalReasons.SystemDescriptorLimit,
        Interop.Errno.EPERM => PipeRefusalReasons.PipeSizeLimit,
        Interop.Errno.ENOMEM => PipeRefusalReasons.OutOfMemory,
        _ => PipeRefusalReasons.Error,
    }, syscall, errno);

    /// <summary>The failure as an exception, for a log line (never thrown by the pool).</summary>
    public SyscallException ToException() => new(Syscall, Errno, Reason);

    public override string ToString() => $"{Reason}: {Syscall} said {Interop.Errno.Name(Errno)}";
}
