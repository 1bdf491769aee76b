namespace SpliceTransport.Interop;

/// <summary>
/// The Linux errno values the transport reacts to. Values are from asm-generic/errno-base.h and
/// asm-generic/errno.h, which x86-64 and arm64 share.
/// </summary>
internal static class Errno
{
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int ENOTDIR = 20;
    public const int EBADF = 9;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EINVAL = 22;
    public const int ENFILE = 23;
    public const int EMFILE = 24;
    public const int ENOSPC = 28;
    public const int ESPIPE = 29;
    public const int EPIPE = 32;
    public const int ENOSYS = 38;
    public const int ENOTSOCK = 88;
    public const int EOPNOTSUPP = 95;
    public const int EAFNOSUPPORT = 97;
    public const int EADDRINUSE = 98;
    public const int EADDRNOTAVAIL = 99;
    public const int ENETDOWN = 100;
    public const int ENETUNREACH = 101;
    public const int ECONNABORTED = 103;
    public const int ECONNRESET = 104;
    public const int ENOBUFS = 105;
    public const int ENOTCONN = 107;
    public const int ETIMEDOUT = 110;
    public const int ECONNREFUSED = 111;
    public const int EHOSTUNREACH = 113;
    public const int EALREADY = 114;
    public const int EINPROGRESS = 115;
    /// <summary>Disk quota exceeded: as ENOSPC, but for one user.</summary>
    public const int EDQUOT = 122;

    /// <summary>The symbolic name of an errno value, for messages; "errno N" when it has none here.</summary>
    public static string Name(int errno) => errno switch
    {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        EINTR => "EINTR",
        ENOTDIR => "ENOTDIR",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EINVAL => "EINVAL",
        ENFILE => "ENFILE",
        EMFILE => "EMFILE",
        ENOSPC => "ENOSPC",
        ESPIPE => "ESPIPE",
        EPIPE => "EPIPE",
        ENOSYS => "ENOSYS",
        ENOTSOCK => "ENOTSOCK",
        EOPNOTSUPP => "EOPNOTSUPP",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EADDRINUSE => "EADDRINUSE",
        EADDRNOTAVAIL => "EADDRNOTAVAIL",
        ENETDOWN => "ENETDOWN",
        ENETUNREACH => "ENETUNREACH",
        ECONNABORTED => "ECONNABORTED",
        ECONNRESET => "ECONNRESET",
        ENOBUFS => "ENOBUFS",
        ENOTCONN => "ENOTCONN",
        ETIMEDOUT => "ETIMEDOUT",
        ECONNREFUSED => "ECONNREFUSED",
        EHOSTUNREACH => "EHOSTUNREACH",
        EALREADY => "EALREADY",
        EINPROGRESS => "EINPROGRESS",
        EDQUOT => "EDQUOT",
        _ => $"errno {errno}",
    };

    /// <summary>True for the errors a peer causes by going away: they end a connection, they are not faults of ours.</summary>
    public static bool IsConnectionReset(int errno) =>
        errno is ECONNRESET or EPIPE or ENOTCONN or ECONNABORTED or ETIMEDOUT or EHOSTUNREACH or ENETUNREACH or ENETDOWN;

    /// <summary>
    /// True for the errors that say "this descriptor, file system or kernel cannot do that call" rather than "it
    /// failed": EINVAL (no support for this kind of descriptor), ENOSYS (no such system call) and EOPNOTSUPP (no
    /// support in this file system). The caller takes its other way (a copy instead of sendfile, no probe, no
    /// reservation); nothing was lost.
    /// </summary>
    public static bool IsUnsupported(int errno) => errno is EINVAL or ENOSYS or EOPNOTSUPP;
}
