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
        int family = SocketAddresses.NativeFamily(endPoint.AddressFamily);
        var socket = new FileDescriptorHandle(LibC.ThrowIfFailed(
            LibC.socket(family, LibC.SOCK_STREAM | LibC.SOCK_NONBLOCK | LibC.SOCK_CLOEXEC, 0), "socket"));
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
    /// Adopts an inherited listening descriptor (systemd socket activation). It must be a listening stream
    /// socket; it is made non-blocking, since the loops never block on it.
    /// </summary>
    public static FileDescriptorHandle Adopt(FileHandleEndPoint endPoint, out EndPoint template)
    {
        var socket = new FileDescriptorHandle(checked((int)endPoint.FileHandle), ownsHandle: true);
        int type = LibC.GetSocketOption(socket, LibC.SOL_SOCKET, LibC.SO_TYPE, "SO_TYPE");
        int listening = LibC.GetSocketOption(socket, LibC.SOL_SOCKET, LibC.SO_ACCEPTCONN, "SO_ACCEPTCONN");
        if (type != LibC.SOCK_STREAM || listening == 0)
        {
            socket.SetHandleAsInvalid();
            throw new ArgumentException($"File handle {endPoint.FileHandle} is not a listening stream socket.", nameof(endPoint));
        }
        int domain = LibC.GetSocketOption(socket, LibC.SOL_SOCKET, LibC.SO_DOMAIN, "SO_DOMAIN");
        template = domain switch
        {
            LibC.AF_INET => new IPEndPoint(IPAddress.Any, 0),
            LibC.AF_INET6 => new IPEndPoint(IPAddress.IPv6Any, 0),
            LibC.AF_UNIX => new UnixDomainSocketEndPoint("/"),
            _ => throw new ArgumentException($"File handle {endPoint.FileHandle} is a socket of unsupported family {domain}.", nameof(endPoint)),
        };
        int flags = LibC.ThrowIfFailed(LibC.fcntl(socket, LibC.F_GETFL, 0), "fcntl", "F_GETFL");
        LibC.ThrowIfFailed(LibC.fcntl(socket, LibC.F_SETFL, flags | LibC.O_NONBLOCK), "fcntl", "F_SETFL");
        return socket;
    }
}
