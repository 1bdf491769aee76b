using System.Net;
using System.Net.Sockets;

namespace SpliceTransport.Interop;

/// <summary>
/// Converts between .NET end points and native sockaddr bytes. <see cref="SocketAddress"/> already holds a
/// sockaddr in the platform's own layout, so the runtime's serializers are reused instead of hand-written ones.
/// </summary>
internal static unsafe class SocketAddresses
{
    /// <summary>sizeof(struct sockaddr_storage): large enough for every family the transport serves.</summary>
    public const int MaxAddressSize = 128;

    /// <summary>The address family constant (AF_*) for a managed family.</summary>
    public static int NativeFamily(AddressFamily family) => family switch
    {
        AddressFamily.InterNetwork => LibC.AF_INET,
        AddressFamily.InterNetworkV6 => LibC.AF_INET6,
        AddressFamily.Unix => LibC.AF_UNIX,
        _ => throw new ArgumentOutOfRangeException(nameof(family), family, $"Address family '{family}' is not supported by SpliceTransport."),
    };

    /// <summary>The local end point of a socket (getsockname), in the form of <paramref name="template"/>.</summary>
    public static EndPoint? GetLocal(FileDescriptorHandle fd, EndPoint template) => Get(fd, template, peer: false);

    /// <summary>The remote end point of a connected socket (getpeername), in the form of <paramref name="template"/>.</summary>
    public static EndPoint? GetRemote(FileDescriptorHandle fd, EndPoint template) => Get(fd, template, peer: true);

    private static EndPoint? Get(FileDescriptorHandle fd, EndPoint template, bool peer)
    {
        var address = new SocketAddress(template.AddressFamily, MaxAddressSize);
        int length = MaxAddressSize;
        int result;
        fixed (byte* bytes = address.Buffer.Span)
        {
            result = peer ? LibC.getpeername(fd, bytes, &length) : LibC.getsockname(fd, bytes, &length);
        }
        if (result != 0)
        {
            // A peer that reset before we asked has no name any more; the connection still gets served (and fails) normally.
            return null;
        }
        address.Size = length;
        if (template is UnixDomainSocketEndPoint && length <= sizeof(ushort))
        {
            // An unnamed Unix socket (the client side of most connections) has only a family, and no end point
            // (.NET cannot make one with an empty path; Kestrel's transport reports none either).
            return null;
        }
        return template.Create(address);
    }
}
