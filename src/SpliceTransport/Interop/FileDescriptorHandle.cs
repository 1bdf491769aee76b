using Microsoft.Win32.SafeHandles;

namespace SpliceTransport.Interop;

/// <summary>
/// Owns one file descriptor (socket, epoll instance, eventfd or pipe end). The SafeHandle reference count
/// keeps the number from being closed, and so reused by another open, while a system call is using it.
/// </summary>
internal sealed class FileDescriptorHandle : SafeHandleMinusOneIsInvalid
{
    /// <summary>Used by the interop marshaller for calls that return a new descriptor.</summary>
    public FileDescriptorHandle() : base(ownsHandle: true)
    {
    }

    /// <summary>
    /// Wraps a descriptor: one this process opened (<paramref name="ownsHandle"/>, closed on dispose), or one
    /// it was handed and must leave open, such as an inherited listening socket.
    /// </summary>
    public FileDescriptorHandle(int fd, bool ownsHandle = true) : base(ownsHandle) => SetHandle(fd);

    /// <summary>The descriptor number; valid only while the handle is not closed.</summary>
    public int Fd => (int)handle;

    /// <inheritdoc />
    // Only -1 is invalid: 0 is a valid descriptor, and a service manager may well hand a socket over as fd 0
    // (inetd style), so it must be usable and, when owned, closed like any other.
    protected override bool ReleaseHandle() => LibC.close((int)handle) == 0;
}
