using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// A system call on a connection's socket that failed while a byte path held the socket
/// (<see cref="ISocketHandoffFeature"/>): which call, and what it returned. The holder hands it back with the
/// socket, and the pump it resumes ends as if its own call had failed, so that a reset is logged, counted and
/// reported to Kestrel in one place whoever met it.
/// </summary>
internal readonly record struct SocketFailure(string Syscall, SyscallResult Result)
{
    public override string ToString() => $"{Syscall}: {Result}";
}
