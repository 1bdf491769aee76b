using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using SpliceTransport.Interop;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>
/// The data path's system calls with faults injected and outcomes counted, installed per host with
/// <c>UseSpliceTransport(o =&gt; o.Syscalls = injector)</c>. Every call goes to the real one unless a fault
/// says otherwise, and is counted in total and per socket (<see cref="SocketLog"/>, keyed by the connection's
/// handle object, so a reused descriptor number never mixes two connections).
///
/// What it can fake, and what it must not: short writes (<see cref="MaxSendMessageBytes"/>,
/// <see cref="MaxSendFileBytes"/>) and errors returned instead of the call (<see cref="AcceptFault"/>,
/// <see cref="SendFileFault"/>, <see cref="SendMessageFault"/>, <see cref="ReceiveFault"/>, <see cref="SetOptionFault"/>,
/// <see cref="ReadFileFault"/>, <see cref="SpliceFault"/>, <see cref="TeeFault"/>, <see cref="CreatePipeErrno"/>,
/// <see cref="SetPipeSizeErrno"/>), short splices (<see cref="MaxSpliceBytes"/>, legal at any time). Splices are
/// counted per socket, in and out, so a test can prove bytes were spliced. Not short reads and not EAGAIN: the pumps take
/// both to mean "wait for the next epoll edge", which a socket that is not really empty or full never raises.
/// Real EAGAIN is counted instead (<see cref="SendFileWouldBlock"/>, <see cref="SendMessageWouldBlock"/>).
/// </summary>
internal sealed unsafe class FaultInjectingSyscalls : Syscalls
{
    /// <summary>What one connection's socket saw through the seam.</summary>
    public sealed class SocketLog
    {
        private int _receiveCalls;
        private int _sendMessageCalls;
        private int _responseHeads;
        private long _sendFileBytes;
        private int _shutdownCalls;
        private int _shutdownWriteCalls;
        private int _resetOnCloseCalls;
        private int _injectedFaults;
        private int _spliceInCalls;
        private long _splicedInBytes;
        private int _spliceOutCalls;
        private long _splicedOutBytes;

        /// <summary>splice calls with this socket as the source (socket → pipe), EAGAIN and errors included.</summary>
        public int SpliceInCalls => Volatile.Read(ref _spliceInCalls);

        /// <summary>Bytes splice really moved from this socket into a pipe.</summary>
        public long SplicedInBytes => Interlocked.Read(ref _splicedInBytes);

        /// <summary>splice calls with this socket as the destination (pipe → socket), EAGAIN and errors included.</summary>
        public int SpliceOutCalls => Volatile.Read(ref _spliceOutCalls);

        /// <summary>Bytes splice really moved from a pipe to this socket.</summary>
        public long SplicedOutBytes => Interlocked.Read(ref _splicedOutBytes);

        internal void CountSplice(bool socketIsSource, SyscallResult result)
        {
            Interlocked.Increment(ref socketIsSource ? ref _spliceInCalls : ref _spliceOutCalls);
            Interlocked.Add(ref socketIsSource ? ref _splicedInBytes : ref _splicedOutBytes, result.Count);
        }

        /// <summary>recv calls on this socket, this one included while a fault callback runs.</summary>
        public int ReceiveCalls => Volatile.Read(ref _receiveCalls);

        public int SendMessageCalls => Volatile.Read(ref _sendMessageCalls);

        /// <summary>sendmsg calls whose first bytes were a status line ("HTTP/1."): roughly, responses begun.</summary>
        public int ResponseHeads => Volatile.Read(ref _responseHeads);

        /// <summary>Bytes sendfile really sent on this socket.</summary>
        public long SendFileBytes => Interlocked.Read(ref _sendFileBytes);

        public int ShutdownCalls => Volatile.Read(ref _shutdownCalls);

        /// <summary>shutdown(2) calls that sent a FIN (SHUT_WR or SHUT_RDWR).</summary>
        public int ShutdownWriteCalls => Volatile.Read(ref _shutdownWriteCalls);

        public int ResetOnCloseCalls => Volatile.Read(ref _resetOnCloseCalls);

        /// <summary>Faults a test's callback injected on this socket.</summary>
        public int InjectedFaults => Volatile.Read(ref _injectedFaults);

        /// <summary>Bytes recv really returned on this socket.</summary>
        public long ReceivedBytes => Interlocked.Read(ref _receivedBytes);

        private long _receivedBytes;

        internal void CountReceive() => Interlocked.Increment(ref _receiveCalls);

        internal void CountReceived(SyscallResult result) => Interlocked.Add(ref _receivedBytes, result.Count);

        internal int CountSendMessage(bool responseHead)
        {
            Interlocked.Increment(ref _sendMessageCalls);
            return responseHead ? Interlocked.Increment(ref _responseHeads) : ResponseHeads;
        }

        internal void CountSendFile(long bytes) => Interlocked.Add(ref _sendFileBytes, bytes);

        internal void CountShutdown(int how)
        {
            Interlocked.Increment(ref _shutdownCalls);
            if (how is LibC.SHUT_WR or LibC.SHUT_RDWR)
            {
                Interlocked.Increment(ref _shutdownWriteCalls);
            }
        }

        internal void CountResetOnClose() => Interlocked.Increment(ref _resetOnCloseCalls);

        internal void CountInjected() => Interlocked.Increment(ref _injectedFaults);
    }

    /// <summary>Decides the result of accept call number <paramref name="call"/> (1-based); null makes the real call.</summary>
    public delegate SyscallResult? AcceptFaultHandler(int call);

    /// <summary>Before a sendfile of <paramref name="count"/> bytes: a result to return instead, or null for the real call.</summary>
    public delegate SyscallResult? SendFileFaultHandler(SocketLog socket, long count);

    /// <summary>
    /// Before a sendmsg: a result to return instead, or null for the real call. <paramref name="responseHead"/>
    /// is the number of this socket's sendmsg calls so far (this one included) that began with a status line,
    /// when this one does, else 0.
    /// </summary>
    public delegate SyscallResult? SendMessageFaultHandler(SocketLog socket, int responseHead);

    /// <summary>
    /// Before a call on <paramref name="socket"/> (recv, setsockopt): a result to return instead, or null for the
    /// real call. Errors only for recv: a short count or EAGAIN would wait, by design, for an edge that never comes.
    /// </summary>
    public delegate SyscallResult? SocketFaultHandler(SocketLog socket);

    /// <summary>
    /// Before a splice: a result to return instead, or null for the real call. <paramref name="socket"/> is the
    /// connection socket on one side (null for pipe ↔ file), <paramref name="socketIsSource"/> which side it is.
    /// Errors only where a socket is the source: a short count or EAGAIN from a socket source would wait for an
    /// edge that never comes (use <see cref="MaxSpliceBytes"/> for short counts, which are real calls).
    /// </summary>
    public delegate SyscallResult? SpliceFaultHandler(SocketLog? socket, bool socketIsSource);

    /// <summary>Before a pread (the copy path and content sniffing): a result to return instead, or null for the real call.</summary>
    public delegate SyscallResult? ReadFileFaultHandler(long offset, int length);

    private static readonly byte[] StatusLinePrefix = Encoding.ASCII.GetBytes("HTTP/1.");

    private readonly ConditionalWeakTable<SafeHandle, SocketLog> _sockets = new();
    private readonly ConcurrentQueue<SocketLog> _allSockets = new();
    private int _acceptCalls;
    private int _armedAcceptCalls;
    private long _sendFileWouldBlock;
    private long _sendMessageWouldBlock;
    private long _shortenedSendMessages;
    private long _shortenedSendFiles;
    private long _injectedFaults;
    private long _teedBytes;
    private int _teeCalls;
    private int _pipesCreated;

    /// <summary>
    /// When set, caps every sendmsg to a prefix of its first vector of 1 to this many bytes, chosen at random:
    /// a short write on every call.
    /// </summary>
    public int MaxSendMessageBytes { get; init; }

    /// <summary>When set, caps every sendfile to 1 to this many bytes, chosen at random.</summary>
    public long MaxSendFileBytes { get; init; }

    /// <summary>Consulted for accept calls made after <see cref="ArmAcceptFault"/>.</summary>
    public AcceptFaultHandler? AcceptFault { get; private set; }

    public SendFileFaultHandler? SendFileFault { get; init; }

    public SendMessageFaultHandler? SendMessageFault { get; init; }

    /// <summary>Consulted before every recv; must return errors only (see <see cref="SocketFaultHandler"/>).</summary>
    public SocketFaultHandler? ReceiveFault { get; init; }

    /// <summary>Consulted before every integer setsockopt (TCP_NODELAY at accept).</summary>
    public SocketFaultHandler? SetOptionFault { get; init; }

    public ReadFileFaultHandler? ReadFileFault { get; init; }

    /// <summary>Before a write(2) or pwrite(2) to a file (a pipe's bytes copied out): a result to return instead, or null.</summary>
    public Func<SyscallResult?>? WriteFileFault { get; init; }

    /// <summary>Consulted before every splice (see <see cref="SpliceFaultHandler"/>).</summary>
    public SpliceFaultHandler? SpliceFault { get; init; }

    /// <summary>
    /// When set, caps every splice to 1 to this many bytes, chosen at random: a short count on most calls, which
    /// splice may return at any time (a pipe slot per packet fragment), so the transfers must not take it for "empty".
    /// </summary>
    public int MaxSpliceBytes { get; init; }

    /// <summary>Before a tee of <c>length</c> bytes (call number, 1-based): a result to return instead (EAGAIN: the capture pipe is full), or null.</summary>
    public Func<int, SyscallResult?>? TeeFault { get; init; }

    /// <summary>When set, pipe2 fails with this errno (EMFILE, ENFILE) instead of being called.</summary>
    public int? CreatePipeErrno { get; set; }

    /// <summary>When set, F_SETPIPE_SZ fails with this errno (EPERM past pipe-user-pages-soft) instead of being called.</summary>
    public int? SetPipeSizeErrno { get; set; }

    /// <summary>When set, fallocate(2) fails with this errno (ENOSPC: a disk that cannot hold an upload).</summary>
    public int? PreallocateErrno { get; set; }

    /// <summary>fallocate calls made through the seam, injected ones included.</summary>
    public int PreallocateCalls => Volatile.Read(ref _preallocateCalls);

    private int _preallocateCalls;

    /// <summary>Bytes tee(2) really copied.</summary>
    public long TeedBytes => Interlocked.Read(ref _teedBytes);

    /// <summary>tee calls made through the seam, injected ones included.</summary>
    public int TeeCalls => Volatile.Read(ref _teeCalls);

    /// <summary>Pipes pipe2 really made.</summary>
    public int PipesCreated => Volatile.Read(ref _pipesCreated);

    /// <summary>splice calls the seam cut short (<see cref="MaxSpliceBytes"/>).</summary>
    public long ShortenedSplices => Interlocked.Read(ref _shortenedSplices);

    private long _shortenedSplices;
    private readonly ConcurrentDictionary<string, bool> _pipeInodes = new();

    /// <summary>
    /// The pipes made through this seam that still have an end open in this process (each kernel pipe once,
    /// whatever else the process opens meanwhile): pooled idle pipes, and any a transfer leaked.
    /// </summary>
    public int OpenPipes()
    {
        var open = new HashSet<string>();
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            string? target = ReadLink(fd);
            if (target is not null && _pipeInodes.ContainsKey(target))
            {
                open.Add(target);
            }
        }
        return open.Count;
    }

    private static string? PipeInode(int fd) => ReadLink($"/proc/self/fd/{fd}");

    private static string? ReadLink(string path)
    {
        try
        {
            return new FileInfo(path).LinkTarget;
        }
        catch (IOException)
        {
            return null; // Closed meanwhile.
        }
    }

    /// <summary>Replaces what cachestat says for a file range (offset, length): e.g. 0 pages, or ENOSYS.</summary>
    public Func<long, long, SyscallResult?>? CachedPagesFault { get; init; }

    /// <summary>cachestat calls made through the seam.</summary>
    public int CachedPagesCalls => Volatile.Read(ref _cachedPagesCalls);

    /// <summary>Replaces what preadv2(RWF_NOWAIT) says for a file offset: e.g. EAGAIN, a page still being read.</summary>
    public Func<long, SyscallResult?>? ReadFileIfCachedFault { get; init; }

    /// <summary>preadv2(RWF_NOWAIT) calls made through the seam.</summary>
    public int ReadFileIfCachedCalls => Volatile.Read(ref _readFileIfCachedCalls);

    private int _readFileIfCachedCalls;

    /// <summary>The names of the threads that made pread calls (a loop thread is "splice-loop-N").</summary>
    public IReadOnlyCollection<string> ReadFileThreads => _readFileThreads.Keys.ToArray();

    private int _cachedPagesCalls;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, bool> _readFileThreads = new();

    /// <summary>Every connection socket seen so far, in the order first seen (at accept, through TCP_NODELAY).</summary>
    public IReadOnlyList<SocketLog> Sockets => _allSockets.ToArray();

    /// <summary>Bytes splice(2) took off every socket, into a pipe (an upload's or a forward's splices in).</summary>
    public long SplicedInBytes => Sockets.Sum(socket => socket.SplicedInBytes);

    public int AcceptCalls => Volatile.Read(ref _acceptCalls);

    /// <summary>sendfile calls that really returned EAGAIN.</summary>
    public long SendFileWouldBlock => Interlocked.Read(ref _sendFileWouldBlock);

    /// <summary>sendmsg calls that really returned EAGAIN.</summary>
    public long SendMessageWouldBlock => Interlocked.Read(ref _sendMessageWouldBlock);

    /// <summary>sendmsg calls this injector cut short (asked for fewer bytes than the caller offered).</summary>
    public long ShortenedSendMessages => Interlocked.Read(ref _shortenedSendMessages);

    /// <summary>sendfile calls this injector cut short.</summary>
    public long ShortenedSendFiles => Interlocked.Read(ref _shortenedSendFiles);

    /// <summary>Results the fault callbacks returned in place of a real call.</summary>
    public long InjectedFaults => Interlocked.Read(ref _injectedFaults);

    /// <summary>Starts consulting <paramref name="fault"/>, numbering accept calls from 1 from now on.</summary>
    public void ArmAcceptFault(AcceptFaultHandler fault)
    {
        Volatile.Write(ref _armedAcceptCalls, 0);
        AcceptFault = fault;
    }

    /// <summary>The log of one socket (made on first sight).</summary>
    public SocketLog For(SafeHandle socket) => _sockets.GetValue(socket, _ =>
    {
        var log = new SocketLog();
        _allSockets.Enqueue(log);
        return log;
    });

    public override SyscallResult Accept(SafeHandle listener, byte* address, int* addressLength)
    {
        Interlocked.Increment(ref _acceptCalls);
        if (AcceptFault is { } fault && fault(Interlocked.Increment(ref _armedAcceptCalls)) is { } injected)
        {
            Interlocked.Increment(ref _injectedFaults);
            return injected;
        }
        return base.Accept(listener, address, addressLength);
    }

    public override SyscallResult SendMessage(SafeHandle socket, LibC.IOVector* vectors, int count, int flags)
    {
        SocketLog log = For(socket);
        bool head = count > 0 && new ReadOnlySpan<byte>(vectors[0].Base, (int)Math.Min(vectors[0].Length, (nuint)StatusLinePrefix.Length)).SequenceEqual(StatusLinePrefix);
        int heads = log.CountSendMessage(head);
        if (SendMessageFault is { } fault && fault(log, head ? heads : 0) is { } injected)
        {
            return Injected(log, injected);
        }

        SyscallResult result;
        if (MaxSendMessageBytes > 0 && count > 0)
        {
            // The caller's vectors are its own stackalloc: cut a copy, never them.
            LibC.IOVector* first = stackalloc LibC.IOVector[1];
            first[0] = vectors[0];
            nuint cap = (nuint)Random.Shared.Next(1, MaxSendMessageBytes + 1);
            if (first[0].Length > cap)
            {
                first[0].Length = cap;
            }
            if (count > 1 || first[0].Length < vectors[0].Length)
            {
                Interlocked.Increment(ref _shortenedSendMessages);
            }
            result = base.SendMessage(socket, first, 1, flags);
        }
        else
        {
            result = base.SendMessage(socket, vectors, count, flags);
        }
        if (result.WouldBlock)
        {
            Interlocked.Increment(ref _sendMessageWouldBlock);
        }
        return result;
    }

    public override SyscallResult SendFile(SafeHandle socket, SafeHandle file, long offset, long count)
    {
        SocketLog log = For(socket);
        if (SendFileFault is { } fault && fault(log, count) is { } injected)
        {
            return Injected(log, injected);
        }
        if (MaxSendFileBytes > 0)
        {
            long cap = Random.Shared.NextInt64(1, MaxSendFileBytes + 1);
            if (count > cap)
            {
                count = cap;
                Interlocked.Increment(ref _shortenedSendFiles);
            }
        }
        SyscallResult result = base.SendFile(socket, file, offset, count);
        if (result.WouldBlock)
        {
            Interlocked.Increment(ref _sendFileWouldBlock);
        }
        else if (result.IsSuccess)
        {
            log.CountSendFile(result.Count);
        }
        return result;
    }

    public override SyscallResult Receive(SafeHandle socket, Span<byte> buffer)
    {
        SocketLog log = For(socket);
        log.CountReceive();
        if (ReceiveFault is { } fault && fault(log) is { } injected)
        {
            Assert.False(injected.IsSuccess || injected.WouldBlock, "Only errors may be injected into recv.");
            return Injected(log, injected);
        }
        SyscallResult received = base.Receive(socket, buffer);
        log.CountReceived(received);
        return received;
    }

    public override SyscallResult CachedPages(SafeHandle file, long offset, long length)
    {
        Interlocked.Increment(ref _cachedPagesCalls);
        return CachedPagesFault?.Invoke(offset, length) ?? base.CachedPages(file, offset, length);
    }

    public override SyscallResult ReadFileIfCached(SafeHandle file, Span<byte> buffer, long offset)
    {
        Interlocked.Increment(ref _readFileIfCachedCalls);
        return ReadFileIfCachedFault?.Invoke(offset) ?? base.ReadFileIfCached(file, buffer, offset);
    }

    public override SyscallResult WriteFile(SafeHandle file, ReadOnlySpan<byte> buffer, long? offset)
    {
        if (WriteFileFault?.Invoke() is { } injected)
        {
            Interlocked.Increment(ref _injectedFaults);
            return injected;
        }
        return base.WriteFile(file, buffer, offset);
    }

    public override SyscallResult ReadFile(SafeHandle file, Span<byte> buffer, long offset)
    {
        _readFileThreads.TryAdd(Thread.CurrentThread.Name ?? "(thread pool or unnamed)", true);
        if (ReadFileFault is { } fault && fault(offset, buffer.Length) is { } injected)
        {
            Interlocked.Increment(ref _injectedFaults);
            return injected;
        }
        return base.ReadFile(file, buffer, offset);
    }

    public override SyscallResult Splice(SafeHandle input, long? inputOffset, SafeHandle output, long? outputOffset, nuint length, uint flags)
    {
        // A known socket is one the seam has seen (every connection sets TCP_NODELAY or is received through it).
        SocketLog? source = _sockets.TryGetValue(input, out SocketLog? inLog) ? inLog : null;
        SocketLog? destination = _sockets.TryGetValue(output, out SocketLog? outLog) ? outLog : null;
        SocketLog? socket = source ?? destination;
        if (SpliceFault is { } fault && fault(socket, source is not null) is { } injected)
        {
            if (source is not null)
            {
                Assert.False(injected.IsSuccess || injected.WouldBlock, "Only errors may be injected into a splice from a socket.");
            }
            source?.CountSplice(true, injected);
            destination?.CountSplice(false, injected);
            return socket is null ? InjectedGlobal(injected) : Injected(socket, injected);
        }
        if (MaxSpliceBytes > 0)
        {
            nuint cap = (nuint)Random.Shared.Next(1, MaxSpliceBytes + 1);
            if (length > cap)
            {
                length = cap;
                Interlocked.Increment(ref _shortenedSplices);
            }
        }
        SyscallResult result = base.Splice(input, inputOffset, output, outputOffset, length, flags);
        source?.CountSplice(true, result);
        destination?.CountSplice(false, result);
        return result;
    }

    public override SyscallResult Tee(SafeHandle input, SafeHandle output, nuint length, uint flags)
    {
        int call = Interlocked.Increment(ref _teeCalls);
        if (TeeFault?.Invoke(call) is { } injected)
        {
            return InjectedGlobal(injected);
        }
        SyscallResult result = base.Tee(input, output, length, flags);
        Interlocked.Add(ref _teedBytes, result.Count);
        return result;
    }

    public override SyscallResult CreatePipe(out FileDescriptorHandle? readEnd, out FileDescriptorHandle? writeEnd)
    {
        if (CreatePipeErrno is int errno)
        {
            readEnd = null;
            writeEnd = null;
            return InjectedGlobal(SyscallResult.Failure(errno));
        }
        SyscallResult result = base.CreatePipe(out readEnd, out writeEnd);
        if (result.IsSuccess)
        {
            Interlocked.Increment(ref _pipesCreated);
            if (PipeInode(readEnd!.Fd) is { } inode)
            {
                _pipeInodes.TryAdd(inode, true);
            }
        }
        return result;
    }

    public override SyscallResult Preallocate(SafeHandle file, long offset, long length)
    {
        Interlocked.Increment(ref _preallocateCalls);
        return PreallocateErrno is int errno ? InjectedGlobal(SyscallResult.Failure(errno)) : base.Preallocate(file, offset, length);
    }

    public override SyscallResult SetPipeSize(SafeHandle pipe, int size) =>
        SetPipeSizeErrno is int errno ? InjectedGlobal(SyscallResult.Failure(errno)) : base.SetPipeSize(pipe, size);

    public override SyscallResult Shutdown(SafeHandle socket, int how)
    {
        For(socket).CountShutdown(how);
        return base.Shutdown(socket, how);
    }

    public override SyscallResult SetOption(SafeHandle socket, int level, int name, int value)
    {
        if (IsListenerOption(level, name))
        {
            // A listening socket being made (before bind): not a connection, so neither logged nor failed here.
            return base.SetOption(socket, level, name, value);
        }
        SocketLog log = For(socket);
        if (SetOptionFault is { } fault && fault(log) is { } injected)
        {
            return Injected(log, injected);
        }
        return base.SetOption(socket, level, name, value);
    }

    private static bool IsListenerOption(int level, int name) =>
        (level == LibC.SOL_SOCKET && name is LibC.SO_REUSEADDR or LibC.SO_REUSEPORT) || (level == LibC.IPPROTO_IPV6 && name == LibC.IPV6_V6ONLY);

    public override SyscallResult SetResetOnClose(SafeHandle socket)
    {
        For(socket).CountResetOnClose();
        return base.SetResetOnClose(socket);
    }

    private SyscallResult InjectedGlobal(SyscallResult result)
    {
        Interlocked.Increment(ref _injectedFaults);
        return result;
    }

    private SyscallResult Injected(SocketLog socket, SyscallResult result)
    {
        socket.CountInjected();
        Interlocked.Increment(ref _injectedFaults);
        return result;
    }
}
