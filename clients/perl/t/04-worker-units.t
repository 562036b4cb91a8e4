# Gateway::Worker's parts that need no broker: operation options, and how a job learns
# that it was cancelled.
use strict;
use warnings;

use Gateway::Worker;
use Gateway::Worker::Job;
use Test::More;

subtest 'operation options' => sub {
    my $worker = Gateway::Worker->new(broker_url => 'amqp://h/');
    ok $worker->operation('a' => sub {}, long_running => 1, prefetch => 3), 'long_running and prefetch';
    eval { $worker->operation('b' => sub {}, lease => 3) };
    like $@, qr/unknown options of b: lease/, 'croaks on an unknown option';
    eval { $worker->operation('c' => sub {}, prefetch => 0) };
    like $@, qr/prefetch of c must be a positive integer/, 'croaks on a bad prefetch';
};

subtest 'a job hears of its cancel once' => sub {
    my @said;
    my $job = Gateway::Worker::Job->new(id => 'j1', op => 'o', answer => sub { push @said, [@_] });
    is $job->cancelled, undef, 'not cancelled at first';
    my @heard;
    $job->on_cancel(sub { push @heard, [$_[0]->id, $_[1]] });
    $job->_cancel('cancelled');
    $job->_cancel('expired');    # the first reason stands
    is $job->cancelled, 'cancelled', 'cancelled, with its reason';
    is_deeply \@heard, [['j1', 'cancelled']], 'the callback ran once';
    $job->on_cancel(sub { push @heard, 'late' });
    is $heard[-1], 'late', 'a callback added afterwards runs at once';
    my $warning = '';
    local $SIG{__WARN__} = sub { $warning .= shift };
    my $other = Gateway::Worker::Job->new(id => 'j2', op => 'o', answer => sub {});
    $other->on_cancel(sub { die "boom\n" });
    $other->_cancel('expired');
    like $warning, qr/j2: an on_cancel callback died: boom/, 'a dying callback is logged, not fatal';
    eval { $job->on_cancel('no') };
    like $@, qr/needs a code reference/, 'croaks without code';
};

subtest 'lease and deadline headers' => sub {
    my $job = Gateway::Worker::Job->new(id => 'j', op => 'o', answer => sub {},
        headers => { 'x-lease-seconds' => 2, 'x-deadline' => 1_700_000_000_500 });
    is $job->lease_seconds, 2, 'lease from x-lease-seconds';
    is $job->deadline, 1_700_000_000.5, 'deadline from x-deadline (ms) in seconds';
};

subtest 'the request\'s trace is continued' => sub {
    my $parent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    my $job = Gateway::Worker::Job->new(id => 'j', op => 'o', answer => sub {},
        headers => { traceparent => $parent, tracestate => 'vendor=abc' });
    is $job->trace_id, '4bf92f3577b34da6a3ce929d0e0e4736', 'the trace id of the request';
    my $headers = $job->trace_headers;
    like $headers->{traceparent}, qr/\A00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01\z/,
        'answers: the same trace and flags';
    isnt $headers->{traceparent}, $parent, '... with a span id of the worker\'s own';
    is $headers->{tracestate}, 'vendor=abc', 'tracestate unchanged';
    for my $bad ('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
                 '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
                 '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', 'junk') {
        my $other = Gateway::Worker::Job->new(id => 'j', op => 'o', answer => sub {},
            headers => { traceparent => $bad });
        is $other->trace_id, undef, "no trace from $bad";
        is_deeply $other->trace_headers, {}, '... and none on the answers';
    }
};

done_testing;
