using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace SpliceTransport.Transport;

/// <summary>
/// The memory a zero-copy file's count passes through Kestrel in (see <see cref="SpliceOutputWriter"/>): handed out
/// as Kestrel's destination and written from as its source, the same bytes, so Kestrel's copy is skipped
/// (Buffer.Memmove returns at once when source and destination are the same) and nobody reads or writes it. A spliced
/// request body's placeholders are slices of it too (see <see cref="InputMemoryPool"/>), which nobody writes either.
///
/// Native, zeroed and never touched: the allocator maps it from fresh zero pages, so it costs address space, not
/// memory, and it stays out of the GC heap, where 64 MiB would count against a container's heap limit and show in
/// every heap-size metric. Zeroed rather than uninitialized so that, if a bug ever sent it, it would carry no
/// bytes of the process's past. One instance for the process, never freed.
/// </summary>
internal sealed unsafe class ScratchMemory : MemoryManager<byte>
{
    /// <summary>
    /// The largest block of a file's count written through Kestrel at once: the response body feature doubles its
    /// blocks up to this size, and each must fit one span of this memory for Kestrel's copy to be skipped.
    /// </summary>
    public const int Size = 64 * 1024 * 1024;

    public static readonly ScratchMemory Shared = new();

    private readonly byte* _pointer = (byte*)NativeMemory.AllocZeroed(Size);

    private ScratchMemory()
    {
    }

    public override Span<byte> GetSpan() => new(_pointer, Size);

    /// <summary>Whether <paramref name="span"/> lies in this memory (an empty span does not).</summary>
    public bool Contains(ReadOnlySpan<byte> span)
    {
        byte* start = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));
        return !span.IsEmpty && start >= _pointer && start + span.Length <= _pointer + Size;
    }

    /// <summary>Native memory does not move: nothing to pin.</summary>
    public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

    public override void Unpin()
    {
    }

    /// <summary>Never freed: the one instance lives as long as the process.</summary>
    protected override void Dispose(bool disposing)
    {
    }
}
