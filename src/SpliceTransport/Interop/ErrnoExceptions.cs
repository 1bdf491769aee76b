using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

namespace SpliceTransport.Interop;

/// <summary>
/// The one place an errno becomes an exception an application sees. Each method gives the type that callers of the
/// matching .NET or Kestrel API already handle (File.Open's for a file, Socket.Connect's for a connect, Kestrel's
/// for a bind), so code written for Kestrel's socket transport handles ours; anything without such a type is the
/// call's own <see cref="SyscallException"/> (an <see cref="IOException"/>), see <see cref="SyscallResult.ToException"/>.
/// Which errno means what (reset, unsupported) is <see cref="Errno"/>'s to say.
/// </summary>
internal static class ErrnoExceptions
{
    /// <summary>
    /// What a failed call on a connection's socket means to Kestrel: a reset (the peer left, <see cref="Errno.IsConnectionReset"/>)
    /// is the <see cref="ConnectionResetException"/> Kestrel's socket transport reports; anything else is the call's own error.
    /// </summary>
    public static IOException ForSocket(SyscallResult result, string syscall, string? detail = null)
    {
        SyscallException error = result.ToException(syscall, detail);
        return result.IsConnectionReset ? new ConnectionResetException(error.Message, error) : error;
    }

    /// <summary>What File.Open throws for a path it cannot open or stat: not found, denied, or the call's error.</summary>
    public static Exception ForFile(string path, int errno, string syscall) => errno switch
    {
        Errno.ENOENT or Errno.ENOTDIR => new FileNotFoundException($"Could not find file '{path}'.", path),
        Errno.EACCES or Errno.EPERM => new UnauthorizedAccessException($"Access to the path '{path}' is denied.", new SyscallException(syscall, errno, path)),
        _ => new SyscallException(syscall, errno, path),
    };

    /// <summary>
    /// What Kestrel expects from a transport's bind: <see cref="AddressInUseException"/>, which it turns into "Failed to
    /// bind to address …: address already in use."
    /// </summary>
    public static Exception ForBind(int errno, EndPoint endPoint)
    {
        var error = new SyscallException("bind", errno, endPoint.ToString());
        return errno == Errno.EADDRINUSE ? new AddressInUseException(error.Message, error) : error;
    }

    /// <summary>The <see cref="SocketException"/> .NET's own sockets give for connect's errno, naming the end point.</summary>
    public static SocketException ForConnect(int errno, EndPoint endPoint)
    {
        SocketError error = errno switch
        {
            Errno.ECONNREFUSED => SocketError.ConnectionRefused,
            Errno.ENETUNREACH => SocketError.NetworkUnreachable,
            Errno.EHOSTUNREACH => SocketError.HostUnreachable,
            Errno.ETIMEDOUT => SocketError.TimedOut,
            Errno.ENETDOWN => SocketError.NetworkDown,
            Errno.ECONNRESET => SocketError.ConnectionReset,
            Errno.EADDRNOTAVAIL or Errno.ENOENT => SocketError.AddressNotAvailable, // ENOENT: no Unix socket at the path.
            Errno.EACCES or Errno.EPERM => SocketError.AccessDenied,
            Errno.EAGAIN => SocketError.TryAgain, // A Unix socket whose listener's backlog is full.
            Errno.EMFILE or Errno.ENFILE => SocketError.TooManyOpenSockets,
            _ => SocketError.SocketError,
        };
        return new SocketException((int)error, $"Could not connect to {endPoint}: {Errno.Name(errno)} ({error}).");
    }

    /// <summary>
    /// A listen handle passed in (a <see cref="FileHandleEndPoint"/>) that cannot be what it claims: the caller's
    /// argument is wrong, so an <see cref="ArgumentException"/> naming the handle, with the call's error inside.
    /// </summary>
    public static ArgumentException ForInheritedHandle(ulong number, int errno, string optionName)
    {
        var error = new SyscallException("getsockopt", errno, optionName);
        return errno switch
        {
            Errno.EBADF => new ArgumentException($"File handle {number} is not an open descriptor.", nameof(FileHandleEndPoint), error),
            Errno.ENOTSOCK => new ArgumentException($"File handle {number} is not a socket.", nameof(FileHandleEndPoint), error),
            _ => new ArgumentException($"File handle {number} could not be checked: {error.Message}", nameof(FileHandleEndPoint), error),
        };
    }
}
