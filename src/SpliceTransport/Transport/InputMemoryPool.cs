using System.Buffers;

namespace SpliceTransport.Transport;

/// <summary>
/// The memory pool of the input pipes (socket → Kestrel). It hands out the transport's pool blocks as ever, and one
/// thing more: the placeholders of a spliced request body (<see cref="ReceiveSegment"/>) as a slice of the shared,
/// zeroed <see cref="ScratchMemory"/>, one segment per pipe load, instead of zeros written into 4 KiB pool blocks.
/// A spliced gibibyte then costs Kestrel's reader a thousand segments instead of a quarter of a million, and the
/// loop no memset, no rent and no return per block.
///
/// Invariant: nobody writes into the scratch memory. The input pipe's only writer is the receive pump; a
/// placeholder slice is exactly as long as the placeholders it carries, so once they are advanced the pipe's write
/// head has no room left in it, and the next write gets a block of its own. Its readers (Kestrel's parser and body
/// reader, the request body's file writer) only read, and the body's writer skips placeholders without looking at
/// them. Should a bug ever expose them, they are zeros: nothing of another request.
/// </summary>
internal sealed class InputMemoryPool(MemoryPool<byte> blocks) : MemoryPool<byte>
{
    /// <summary>
    /// The most placeholders one slice carries: a pipe load never holds more than the largest kernel pipe, and
    /// Kestrel's input pauses at MaxRequestBufferSize (1 MiB by default) anyway.
    /// </summary>
    public const int MaxPlaceholderSlice = 1024 * 1024;

    /// <summary>The length of placeholder slice the pump is asking the pipe for on this thread, or 0.</summary>
    [ThreadStatic]
    private static int t_placeholdersWanted;

    /// <summary>
    /// Raised above the blocks' size so that the pipe asks this pool for a placeholder slice rather than allocate
    /// an array of that size itself (a gen0 allocation per pipe load).
    /// </summary>
    public override int MaxBufferSize => MaxPlaceholderSlice;

    /// <summary>
    /// Gets room in <paramref name="input"/> for up to <paramref name="count"/> placeholders, and says whether it is
    /// the zeroed scratch (nothing to write: advance it) or a pool block the pipe already had (zero it first). Only
    /// a request of a whole slice (at least a block, see <see cref="Rent"/>) is served from the scratch.
    /// </summary>
    public static Span<byte> GetPlaceholderSpan(System.IO.Pipelines.PipeWriter input, int count, out bool zeroed)
    {
        int wanted = Math.Min(count, MaxPlaceholderSlice);
        t_placeholdersWanted = wanted;
        Span<byte> span;
        try
        {
            span = input.GetSpan(wanted);
        }
        finally
        {
            t_placeholdersWanted = 0;
        }
        zeroed = ScratchMemory.Shared.Contains(span);
        return span;
    }

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize > 0 && minBufferSize == t_placeholdersWanted)
        {
            // The pipe asks for exactly the placeholders (a count below its minimum segment size is asked as the
            // minimum and falls through to a block, which the pump zeroes): a slice of that length and no more.
            return new PlaceholderSlice(minBufferSize);
        }
        if (minBufferSize <= blocks.MaxBufferSize)
        {
            return blocks.Rent(minBufferSize);
        }
        // Not the pump's placeholders, but larger than a block: what the pipe would have done itself.
        return new PooledArray(minBufferSize);
    }

    /// <summary>The blocks belong to the transport's pool, which its context disposes.</summary>
    protected override void Dispose(bool disposing)
    {
    }

    /// <summary>A slice of the scratch memory: nothing to return.</summary>
    private sealed class PlaceholderSlice(int length) : IMemoryOwner<byte>
    {
        public Memory<byte> Memory { get; } = ScratchMemory.Shared.Memory[..length];

        public void Dispose()
        {
        }
    }

    /// <summary>An array of the shared array pool, returned when the pipe is done with it.</summary>
    private sealed class PooledArray(int length) : IMemoryOwner<byte>
    {
        private byte[]? _array = ArrayPool<byte>.Shared.Rent(length);

        public Memory<byte> Memory => _array ?? throw new ObjectDisposedException(nameof(PooledArray));

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _array, null) is { } array)
            {
                ArrayPool<byte>.Shared.Return(array);
            }
        }
    }
}
