using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>Creates bound, listening, non-blocking sockets for the end points the transport serves.</summary>
internal static class ListenSockets
{
    /// <summary>
    /// Creates a socket for <paramref name="endPoint"/>, applies the options Kestrel's socket transport
    /// applies, binds and listens. With <paramref name="reusePort"/> several sockets can share one port and
    /// the kernel spreads incoming connections over them.
    /// </summary>
    public static FileDescriptorHandle Create(EndPoint endPoint, int backlog, bool reusePort, bool listen = true)
    {
        FileDescriptorHandle socket = SocketAddresses.OpenStreamSocket(endPoint);
        try
        {
            if (endPoint is IPEndPoint ip)
            {
                // As .NET does on Unix: a restarted server may bind while old connections sit in TIME_WAIT.
                LibC.SetSocketOption(socket, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 1, "SO_REUSEADDR");
                if (ip.AddressFamily == AddressFamily.InterNetworkV6)
                {
                    // [::] serves IPv4 too (dual mode), as in Kestrel; a specific IPv6 address serves only itself.
                    int v6Only = ip.Address.Equals(IPAddress.IPv6Any) ? 0 : 1;
                    LibC.SetSocketOption(socket, LibC.IPPROTO_IPV6, LibC.IPV6_V6ONLY, v6Only, "IPV6_V6ONLY");
                }
                if (reusePort)
                {
                    LibC.SetSocketOption(socket, LibC.SOL_SOCKET, LibC.SO_REUSEPORT, 1, "SO_REUSEPORT");
                }
            }
            if (SocketAddresses.Bind(socket, endPoint) != 0)
            {
                int errno = LibC.LastErrno;
                var error = new SyscallException("bind", errno, endPoint.ToString());
                if (errno == Errno.EADDRINUSE)
                {
                    // The type Kestrel turns into "Failed to bind to address …: address already in use."
                    throw new AddressInUseException(error.Message, error);
                }
                throw error;
            }
            if (listen)
            {
                LibC.ThrowIfFailed(LibC.listen(socket, backlog), "listen", endPoint.ToString());
            }
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// SO_REUSEPORT lets any socket of the same user that also sets it join a port, so a second server started
    /// by mistake on a port in use would silently share it instead of failing. A socket without SO_REUSEPORT
    /// cannot bind a port that anyone holds, so binding one first (and closing it again, before it ever
    /// listens) turns that mistake into the AddressInUseException Kestrel's socket transport gives.
    /// The port is then free for the reuse-port group except in the instant between the two binds.
    /// </summary>
    public static void ThrowIfPortTaken(IPEndPoint endPoint)
    {
        if (endPoint.Port == 0)
        {
            return; // An ephemeral port is never taken.
        }
        using FileDescriptorHandle probe = Create(endPoint, backlog: 0, reusePort: false, listen: false);
    }

    /// <summary>
    /// Adopts an inherited listening descriptor (<c>ListenOptions.UseFileHandle</c>, systemd socket activation).
    /// It is checked before anything is done with it: an open descriptor, a socket, a stream socket, listening,
    /// of a family the transport serves (a wrong one gets an <see cref="ArgumentException"/> that names the
    /// handle and what it is instead). The handle is not owned, as in Kestrel: whoever passed it keeps it, and
    /// unbinding never closes it. It is made non-blocking, since the loops never block on it.
    /// </summary>
    public static FileDescriptorHandle Adopt(FileHandleEndPoint endPoint, out EndPoint template)
    {
        ulong number = endPoint.FileHandle;
        if (number > int.MaxValue)
        {
            throw new ArgumentException($"File handle {number} is not a valid descriptor number.", nameof(endPoint));
        }
        var socket = new FileDescriptorHandle((int)number, ownsHandle: false);
        int type = InheritedOption(socket, number, LibC.SO_TYPE, "SO_TYPE");
        if (type != LibC.SOCK_STREAM)
        {
            throw new ArgumentException($"File handle {number} is a socket of type {type}, not a stream socket (SOCK_STREAM).", nameof(endPoint));
        }
        if (InheritedOption(socket, number, LibC.SO_ACCEPTCONN, "SO_ACCEPTCONN") == 0)
        {
            throw new ArgumentException($"File handle {number} is a stream socket that is not listening: call listen(2) on it before handing it over.", nameof(endPoint));
        }
        int domain = InheritedOption(socket, number, LibC.SO_DOMAIN, "SO_DOMAIN");
        template = domain switch
        {
            LibC.AF_INET => new IPEndPoint(IPAddress.Any, 0),
            LibC.AF_INET6 => new IPEndPoint(IPAddress.IPv6Any, 0),
            LibC.AF_UNIX => new UnixDomainSocketEndPoint("/"),
            _ => throw new ArgumentException($"File handle {number} is a listening socket of address family {domain}; SpliceTransport serves AF_INET, AF_INET6 and AF_UNIX.", nameof(endPoint)),
        };
        int flags = LibC.ThrowIfFailed(LibC.fcntl(socket, LibC.F_GETFL, 0), "fcntl", "F_GETFL");
        LibC.ThrowIfFailed(LibC.fcntl(socket, LibC.F_SETFL, flags | LibC.O_NONBLOCK), "fcntl", "F_SETFL");
        return socket;
    }

    /// <summary>An integer socket option of an inherited handle; what it is not (closed, not a socket) becomes the error.</summary>
    private static unsafe int InheritedOption(FileDescriptorHandle socket, ulong number, int name, string optionName)
    {
        int value = 0;
        int length = sizeof(int);
        if (LibC.getsockopt(socket, LibC.SOL_SOCKET, name, &value, &length) == 0)
        {
            return value;
        }
        int errno = LibC.LastErrno;
        var error = new SyscallException("getsockopt", errno, optionName);
        throw errno switch
        {
            Errno.EBADF => new ArgumentException($"File handle {number} is not an open descriptor.", nameof(FileHandleEndPoint), error),
            Errno.ENOTSOCK => new ArgumentException($"File handle {number} is not a socket.", nameof(FileHandleEndPoint), error),
            _ => new ArgumentException($"File handle {number} could not be checked: {error.Message}", nameof(FileHandleEndPoint), error),
        };
    }
}
