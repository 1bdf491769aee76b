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
    public static FileDescriptorHandle Create(Syscalls syscalls, EndPoint endPoint, int backlog, bool reusePort, bool listen = true)
    {
        FileDescriptorHandle socket = OpenStreamSocket(syscalls, endPoint);
        try
        {
            if (endPoint is IPEndPoint ip)
            {
                // As .NET does on Unix: a restarted server may bind while old connections sit in TIME_WAIT.
                SetOption(syscalls, socket, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 1, "SO_REUSEADDR");
                if (ip.AddressFamily == AddressFamily.InterNetworkV6)
                {
                    // [::] serves IPv4 too (dual mode), as in Kestrel; a specific IPv6 address serves only itself.
                    int v6Only = ip.Address.Equals(IPAddress.IPv6Any) ? 0 : 1;
                    SetOption(syscalls, socket, LibC.IPPROTO_IPV6, LibC.IPV6_V6ONLY, v6Only, "IPV6_V6ONLY");
                }
                if (reusePort)
                {
                    SetOption(syscalls, socket, LibC.SOL_SOCKET, LibC.SO_REUSEPORT, 1, "SO_REUSEPORT");
                }
            }
            SyscallResult bound = syscalls.Bind(socket, endPoint);
            if (!bound.IsSuccess)
            {
                throw ErrnoExceptions.ForBind(bound.Errno, endPoint);
            }
            if (listen)
            {
                syscalls.Listen(socket, backlog).CountOrThrow("listen", endPoint.ToString());
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
    public static void ThrowIfPortTaken(Syscalls syscalls, IPEndPoint endPoint)
    {
        if (endPoint.Port == 0)
        {
            return; // An ephemeral port is never taken.
        }
        using FileDescriptorHandle probe = Create(syscalls, endPoint, backlog: 0, reusePort: false, listen: false);
    }

    /// <summary>
    /// Adopts an inherited listening descriptor (<c>ListenOptions.UseFileHandle</c>, systemd socket activation).
    /// It is checked before anything is done with it: an open descriptor, a socket, a stream socket, listening,
    /// of a family the transport serves (a wrong one gets an <see cref="ArgumentException"/> that names the
    /// handle and what it is instead). The handle is not owned, as in Kestrel: whoever passed it keeps it, and
    /// unbinding never closes it. It is made non-blocking, since the loops never block on it.
    /// </summary>
    public static FileDescriptorHandle Adopt(Syscalls syscalls, FileHandleEndPoint endPoint, out EndPoint template)
    {
        ulong number = endPoint.FileHandle;
        if (number > int.MaxValue)
        {
            throw new ArgumentException($"File handle {number} is not a valid descriptor number.", nameof(endPoint));
        }
        var socket = new FileDescriptorHandle((int)number, ownsHandle: false);
        int type = InheritedOption(syscalls, socket, number, LibC.SO_TYPE, "SO_TYPE");
        if (type != LibC.SOCK_STREAM)
        {
            throw new ArgumentException($"File handle {number} is a socket of type {type}, not a stream socket (SOCK_STREAM).", nameof(endPoint));
        }
        if (InheritedOption(syscalls, socket, number, LibC.SO_ACCEPTCONN, "SO_ACCEPTCONN") == 0)
        {
            throw new ArgumentException($"File handle {number} is a stream socket that is not listening: call listen(2) on it before handing it over.", nameof(endPoint));
        }
        int domain = InheritedOption(syscalls, socket, number, LibC.SO_DOMAIN, "SO_DOMAIN");
        template = domain switch
        {
            LibC.AF_INET => new IPEndPoint(IPAddress.Any, 0),
            LibC.AF_INET6 => new IPEndPoint(IPAddress.IPv6Any, 0),
            LibC.AF_UNIX => new UnixDomainSocketEndPoint("/"),
            _ => throw new ArgumentException($"File handle {number} is a listening socket of address family {domain}; SpliceTransport serves AF_INET, AF_INET6 and AF_UNIX.", nameof(endPoint)),
        };
        long flags = syscalls.GetStatusFlags(socket).CountOrThrow("fcntl", "F_GETFL");
        syscalls.SetStatusFlags(socket, (int)flags | LibC.O_NONBLOCK).CountOrThrow("fcntl", "F_SETFL");
        return socket;
    }

    /// <summary>An integer socket option of an inherited handle; what it is not (closed, not a socket) becomes the error.</summary>
    private static int InheritedOption(Syscalls syscalls, FileDescriptorHandle socket, ulong number, int name, string optionName)
    {
        SyscallResult value = syscalls.GetOption(socket, LibC.SOL_SOCKET, name);
        if (value.IsSuccess)
        {
            return (int)value.Count;
        }
        throw ErrnoExceptions.ForInheritedHandle(number, value.Errno, optionName);
    }

    /// <summary>
    /// A new non-blocking, close-on-exec stream socket for <paramref name="endPoint"/>'s family, or the failure
    /// (EMFILE, …) as a <see cref="SyscallException"/>.
    /// </summary>
    public static FileDescriptorHandle OpenStreamSocket(Syscalls syscalls, EndPoint endPoint)
    {
        return syscalls.OpenStreamSocket(endPoint).DescriptorOrThrow("socket");
    }

    /// <summary>Sets an integer socket option, throwing with the option's name on failure.</summary>
    private static void SetOption(Syscalls syscalls, FileDescriptorHandle socket, int level, int name, int value, string optionName)
    {
        syscalls.SetOption(socket, level, name, value).CountOrThrow("setsockopt", optionName);
    }
}
