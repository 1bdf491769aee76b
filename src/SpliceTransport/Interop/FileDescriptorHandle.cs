using Microsoft.Win32.SafeHandles;

namespace SpliceTransport.Interop;

/// <summary>
/// Owns one file descriptor (socket, epoll instance, eventfd or pipe end). The SafeHandle reference count
/// keeps the number from being closed, and so reused by another open, while a system call is using it.
/// </summary>
internal sealed class FileDescriptorHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    /// <summary>Used by the interop marshaller for calls that return a new descriptor.</summary>
    public FileDescriptorHandle() : base(ownsHandle: true)
    {
    }

    /// <summary>Wraps a descriptor this process already owns.</summary>
    public FileDescriptorHandle(int fd, bool ownsHandle = true) : base(ownsHandle) => SetHandle(fd);

    /// <summary>The descriptor number; valid only while the handle is not closed.</summary>
    public int Fd => (int)handle;

    /// <inheritdoc />
    // 0 is a valid descriptor (stdin) in principle, but the transport never owns it, so the base class's
    // "0 or -1 is invalid" rule only ever rejects -1.
    protected override bool ReleaseHandle() => LibC.close((int)handle) == 0;
}
