using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

/// <summary>
/// Every system call the transport makes, bound with source-generated <see cref="LibraryImportAttribute"/>
/// (no runtime marshalling stubs, blittable signatures) and <c>SetLastError</c> so errno survives the call.
/// Descriptors the caller keeps using are passed as <see cref="SafeHandle"/>s: the marshaller holds a
/// reference for the duration of the call, so a concurrent close cannot hand the number to another open.
/// Only 64-bit Linux is supported (x86-64 and arm64), whose ABIs share the constants and layouts used here.
/// </summary>
internal static unsafe partial class LibC
{
    private const string Library = "libc";

    [LibraryImport(Library, SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(Library, SetLastError = true)]
    public static partial int fcntl(SafeHandle fd, int cmd, int arg);

    /// <summary>The errno of the last failed call on this thread.</summary>
    public static int LastErrno => Marshal.GetLastPInvokeError();
}
