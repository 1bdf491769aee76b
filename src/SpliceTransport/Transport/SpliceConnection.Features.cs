using System.Buffers;
using System.Collections;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace SpliceTransport.Transport;

/// <summary>
/// The connection is its own feature collection, as Kestrel's transport connections are: the transport's
/// features are answered by type without a dictionary, and only features others add (Kestrel adds several)
/// go into one.
/// </summary>
internal sealed partial class SpliceConnection :
    IFeatureCollection,
    IConnectionIdFeature,
    IConnectionTransportFeature,
    IConnectionItemsFeature,
    IMemoryPoolFeature,
    IConnectionLifetimeFeature,
    IConnectionEndPointFeature,
    IConnectionSocketFeature,
    ISpliceConnectionFeature,
    IZeroCopyOutputFeature,
    IZeroCopyInputFeature
{
    private Dictionary<Type, object>? _extraFeatures;

    /// <summary>One of the connection's own features has been set by others (then the dictionary is asked first).</summary>
    private bool _ownFeatureReplaced;
    private int _featureRevision;
    private System.Net.Sockets.Socket? _socketView;

    public override IFeatureCollection Features => this;

    public MemoryPool<byte> MemoryPool => _context.MemoryPool;

    public int EventLoopIndex => Loop.Index;

    /// <summary>
    /// A <see cref="System.Net.Sockets.Socket"/> over the connection's descriptor, for apps that set socket
    /// options. It does not own the descriptor (disposing it closes nothing), and it must not be used for
    /// I/O: the descriptor belongs to a SpliceTransport event loop, and a Socket's asynchronous operations
    /// would register it with the runtime's own epoll engine as well.
    /// </summary>
    public System.Net.Sockets.Socket Socket2
    {
        get
        {
            // Under the same lock as DisposeSocketView, so that no view is made of a descriptor already closed
            // (its number could belong to another file by then).
            lock (Readiness)
            {
                ObjectDisposedException.ThrowIf(State == ConnectionState.Closed, this);
                return _socketView ??= new System.Net.Sockets.Socket(new SafeSocketHandle(Socket.DangerousGetHandle(), ownsHandle: false));
            }
        }
    }

    /// <summary>Disposes the socket view before the descriptor closes, so that later use of it throws. Loop thread.</summary>
    private void DisposeSocketView()
    {
        lock (Readiness)
        {
            _socketView?.Dispose();
        }
    }

    System.Net.Sockets.Socket IConnectionSocketFeature.Socket => Socket2;

    bool IFeatureCollection.IsReadOnly => false;

    int IFeatureCollection.Revision => _featureRevision;

    object? IFeatureCollection.this[Type key]
    {
        get => GetFeature(key);
        set
        {
            _featureRevision++;
            _ownFeatureReplaced |= Array.IndexOf(s_ownFeatures, key) >= 0;
            if (value is null)
            {
                _extraFeatures?.Remove(key);
            }
            else
            {
                (_extraFeatures ??= new Dictionary<Type, object>())[key] = value;
            }
        }
    }

    private object? GetFeature(Type key) => GetFeature(key, Array.IndexOf(s_ownFeatures, key) >= 0);

    private object? GetFeature(Type key, bool own)
    {
        // Features set by others win, so that Kestrel or middleware can replace one of ours. Until one of ours has
        // been replaced, one of ours needs no dictionary lookup.
        if (own && !_ownFeatureReplaced)
        {
            return this;
        }
        if (_extraFeatures is not null && _extraFeatures.TryGetValue(key, out object? extra))
        {
            return extra;
        }
        return own ? this : null;
    }

    /// <summary>
    /// By type parameter, without a search: Kestrel asks the connection for every feature its request collection
    /// does not hold, several times per request (a search of the list and a dictionary lookup each cost 1.3% of
    /// the CPU of a 64 KiB response).
    /// </summary>
    TFeature? IFeatureCollection.Get<TFeature>() where TFeature : default => (TFeature?)GetFeature(typeof(TFeature), OwnFeature<TFeature>.Is);

    /// <summary>Whether <typeparamref name="TFeature"/> is one of the connection's own features, worked out once per type.</summary>
    private static class OwnFeature<TFeature>
    {
        public static readonly bool Is = Array.IndexOf(s_ownFeatures, typeof(TFeature)) >= 0;
    }

    void IFeatureCollection.Set<TFeature>(TFeature? instance) where TFeature : default => ((IFeatureCollection)this)[typeof(TFeature)] = instance;

    IEnumerator<KeyValuePair<Type, object>> IEnumerable<KeyValuePair<Type, object>>.GetEnumerator()
    {
        foreach (Type type in s_ownFeatures)
        {
            if (_extraFeatures is null || !_extraFeatures.ContainsKey(type))
            {
                yield return new KeyValuePair<Type, object>(type, this);
            }
        }
        if (_extraFeatures is not null)
        {
            foreach (KeyValuePair<Type, object> pair in _extraFeatures)
            {
                yield return pair;
            }
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => ((IEnumerable<KeyValuePair<Type, object>>)this).GetEnumerator();

    private static readonly Type[] s_ownFeatures =
    [
        typeof(IConnectionIdFeature), typeof(IConnectionTransportFeature), typeof(IConnectionItemsFeature),
        typeof(IMemoryPoolFeature), typeof(IConnectionLifetimeFeature), typeof(IConnectionEndPointFeature),
        typeof(IConnectionSocketFeature), typeof(ISpliceConnectionFeature), typeof(IZeroCopyOutputFeature), typeof(IZeroCopyInputFeature), typeof(ISocketHandoffFeature),
    ];
}
