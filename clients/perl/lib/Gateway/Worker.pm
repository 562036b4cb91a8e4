package Gateway::Worker;

# Serve gateway operations from Perl over AMQP, speaking only the pinned wire protocol:
# consume the queue named after the operation, answer to reply_to with the request's
# correlation_id and an AMQP type (progress / result / error), then ack the request once
# RabbitMQ has confirmed the answer -- or, for long-running operations, say `started`, ack
# at once and keep the job's lease with heartbeats. Handlers may return a condvar, so the
# event loop (heartbeats, cancel notices, other jobs) runs while they work.

use strict;
use warnings;

use AnyEvent;
use AnyEvent::RabbitMQ;
use Carp qw(croak);
use IO::Handle;
use JSON::PP ();
use Scalar::Util qw(blessed refaddr);

use Gateway::Worker::FieldTable;
use Gateway::Worker::Failure;
use Gateway::Worker::Job;

our $VERSION = '0.01';

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

# How long to keep trying for the gateway to declare a queue, between tries.
my $QUEUE_RETRY_SECONDS = 0.5;
my $MAX_RECONNECT_SECONDS = 30;
my $SHUTDOWN_GRACE_SECONDS = 5;
# The gateway's fanout exchange of cancel notices, and how many cancelled ids to remember
# (to skip their requests should they arrive after the notice).
my $CANCEL_EXCHANGE = 'gateway.cancel';
my $REMEMBERED_CANCELS = 10_000;
my $DEFAULT_LEASE_SECONDS = 120;

sub new {
    my ($class, %args) = @_;
    my $broker_url = delete $args{broker_url} // croak 'broker_url is required';
    my $self = bless {
        broker     => parse_broker_url($broker_url),
        prefetch   => delete $args{prefetch} // 1,
        log        => delete $args{log} // sub { print STDERR "gateway-worker: @_\n" },
        operations => [],
        running    => {},    # job id => { refaddr => job } of the jobs being worked on
        cancelled  => {},    # job ids the gateway cancelled, the latest $REMEMBERED_CANCELS
        cancelled_order => [],
    }, $class;
    croak "unknown arguments: @{[ sort keys %args ]}" if %args;
    croak 'prefetch must be a positive integer' unless $self->{prefetch} =~ /\A[1-9][0-9]*\z/;
    croak 'log must be a code reference' unless ref $self->{log} eq 'CODE';
    return $self;
}

# Register a handler: sub { my ($request, $job) = @_; ...; return $result_or_condvar },
# with options long_running => 1 and prefetch => N.
sub operation {
    my ($self, $op, $handler, %options) = @_;
    croak 'operation needs a name' unless defined $op && !ref $op && length $op;
    croak "the handler of $op must be a code reference" unless ref $handler eq 'CODE';
    croak "operation $op is registered twice" if grep { $_->{op} eq $op } @{ $self->{operations} };
    my $long_running = delete $options{long_running};
    my $prefetch = delete $options{prefetch} // $self->{prefetch};
    croak "unknown options of $op: @{[ sort keys %options ]}" if %options;
    croak "the prefetch of $op must be a positive integer" unless $prefetch =~ /\A[1-9][0-9]*\z/;
    push @{ $self->{operations} }, { op => $op, handler => $handler, long_running => !!$long_running, prefetch => $prefetch };
    return $self;
}

# Consume until SIGINT or SIGTERM; reconnects when the broker goes away.
sub run {
    my ($self) = @_;
    croak 'no operation registered' unless @{ $self->{operations} };
    local $| = 1;
    my $stopped = AnyEvent->condvar;
    my @signals = map {
        AnyEvent->signal(signal => $_, cb => sub { $self->_shut_down($stopped) })
    } qw(INT TERM);
    $self->{reconnect_delay} = 1;
    $self->_connect;
    $stopped->recv;
    return;
}

# amqp://user:pass@host:port/vhost, with the parts URL-decoded; no path means vhost "/".
sub parse_broker_url {
    my ($url) = @_;
    my ($user, $pass, $host, $port, $vhost) = $url =~ m{
        \A amqp://
        (?: ([^:@/]*) (?: : ([^@/]*) )? @ )?
        ( \[[^\]]+\] | [^:/?#]* )
        (?: : ([0-9]+) )?
        (?: / ([^?#]*) )?
        (?: [?#].* )? \z
    }x or croak "not an amqp:// URL: $url";
    $host =~ s/\A\[(.*)\]\z/$1/;
    return {
        host  => length $host ? $host : '127.0.0.1',
        port  => $port // 5672,
        user  => _unescape($user // 'guest'),
        pass  => _unescape($pass // 'guest'),
        vhost => defined $vhost && length $vhost ? _unescape($vhost) : '/',
    };
}

# --- connection and consumers ---------------------------------------------------------

sub _connect {
    my ($self) = @_;
    my $broker = $self->{broker};
    my $connection = AnyEvent::RabbitMQ->new->load_xml_spec;
    $self->{connection} = $connection;
    $connection->connect(
        %$broker,
        timeout         => 10,
        tune            => { heartbeat => 30 },
        on_success      => sub { $self->_start_consumers(shift) },
        on_failure      => sub { $self->_lost("cannot connect to the broker: @_") },
        on_read_failure => sub { $self->_lost("broker connection failed: @_") },
        on_close        => sub { $self->_lost('the broker closed the connection: ' . _close_reason(@_)) },
    );
}

sub _lost {
    my ($self, $why) = @_;
    return if $self->{stopping} || $self->{reconnect_timer};
    $self->{log}->("$why; reconnecting in $self->{reconnect_delay} s");
    delete $self->{connection};
    $self->{reconnect_timer} = AnyEvent->timer(after => $self->{reconnect_delay}, cb => sub {
        delete $self->{reconnect_timer};
        $self->_connect;
    });
    $self->{reconnect_delay} = _min($self->{reconnect_delay} * 2, $MAX_RECONNECT_SECONDS);
}

sub _start_consumers {
    my ($self, $connection) = @_;
    my $waiting = AnyEvent->condvar(cb => sub {
        $self->{reconnect_delay} = 1;
        # The harness (and people) wait for this line.
        print STDOUT 'serving ', join(', ', map { $_->{op} } @{ $self->{operations} }), "\n";
        STDOUT->flush;
    });
    $waiting->begin;
    $waiting->begin;
    $self->_listen_for_cancels($connection, sub { $waiting->end });
    for my $operation (@{ $self->{operations} }) {
        $waiting->begin;
        $self->_consume($connection, $operation, sub { $waiting->end });
    }
    $waiting->end;
}

# One confirm-mode channel per operation; the gateway owns the topology, so declare the
# queue passively and try again until the gateway has declared it.
sub _consume {
    my ($self, $connection, $operation, $consuming) = @_;
    my $op = $operation->{op};
    my $failed = sub { $self->{log}->("cannot consume $op: @_") };
    $connection->open_channel(
        on_failure => $failed,
        on_success => sub {
            my ($channel) = @_;
            $channel->declare_queue(
                queue      => $op,
                passive    => 1,
                on_failure => sub {
                    $self->{log}->("queue $op not declared yet (is the gateway up?)");
                    my $timer; $timer = AnyEvent->timer(after => $QUEUE_RETRY_SECONDS, cb => sub {
                        undef $timer;
                        $self->_consume($connection, $operation, $consuming) if $connection->is_open;
                    });
                },
                on_success => sub {
                    $channel->confirm(on_failure => $failed, on_success => sub {
                        $channel->qos(prefetch_count => $operation->{prefetch}, on_failure => $failed, on_success => sub {
                            $channel->consume(
                                queue      => $op,
                                no_ack     => 0,
                                on_failure => $failed,
                                on_consume => sub { $self->_handle($channel, $operation, shift) },
                                on_success => $consuming,
                            );
                        });
                    });
                },
            );
        },
    );
}

# Cancel notices: the exchange is the gateway's (declared passively, as the queues, since a
# least-privilege worker user may not declare it); our own exclusive, server-named queue.
sub _listen_for_cancels {
    my ($self, $connection, $listening) = @_;
    my $failed = sub { $self->{log}->("cannot listen for cancel notices: @_") };
    $connection->open_channel(
        on_failure => $failed,
        on_success => sub {
            my ($channel) = @_;
            $channel->declare_exchange(
                exchange   => $CANCEL_EXCHANGE,
                passive    => 1,
                on_failure => sub {
                    $self->{log}->("exchange $CANCEL_EXCHANGE not declared yet (is the gateway up?)");
                    my $timer; $timer = AnyEvent->timer(after => $QUEUE_RETRY_SECONDS, cb => sub {
                        undef $timer;
                        $self->_listen_for_cancels($connection, $listening) if $connection->is_open;
                    });
                },
                on_success => sub {
                    $channel->declare_queue(exclusive => 1, auto_delete => 1, on_failure => $failed, on_success => sub {
                        my $queue = shift->method_frame->queue;
                        $channel->bind_queue(
                            queue => $queue, exchange => $CANCEL_EXCHANGE, routing_key => '',
                            on_failure => $failed,
                            on_success => sub {
                                $channel->consume(
                                    queue      => $queue,
                                    no_ack     => 1,
                                    on_failure => $failed,
                                    on_consume => sub { $self->_cancel_notice(shift) },
                                    on_success => $listening,
                                );
                            },
                        );
                    });
                },
            );
        },
    );
}

# A notice names the job in correlation_id (type `cancel`): remember it, stop its work.
sub _cancel_notice {
    my ($self, $delivery) = @_;
    my $properties = $delivery->{header};
    my $id = $properties->correlation_id;
    my $type = $properties->type;
    return unless defined $id && length $id && (!defined $type || $type eq 'cancel');
    unless ($self->{cancelled}{$id}++) {
        push @{ $self->{cancelled_order} }, $id;
        delete $self->{cancelled}{ shift @{ $self->{cancelled_order} } }
            while @{ $self->{cancelled_order} } > $REMEMBERED_CANCELS;
    }
    for my $job (values %{ $self->{running}{$id} // {} }) {
        $self->{log}->("job $id cancelled by the gateway");
        $job->_cancel('cancelled');
    }
}

sub _shut_down {
    my ($self, $stopped) = @_;
    return if $self->{stopping}++;
    my $connection = $self->{connection};
    return $stopped->send unless $connection && $connection->is_open;
    # Unacked requests go back to the queue when the connection closes; answers already
    # published get their confirms first, as closing waits for the channels to close.
    my $grace = AnyEvent->timer(after => $SHUTDOWN_GRACE_SECONDS, cb => sub { $stopped->send });
    $connection->close(on_success => sub { undef $grace; $stopped->send }, on_failure => sub { undef $grace; $stopped->send });
}

# --- one request ------------------------------------------------------------------------

sub _handle {
    my ($self, $channel, $operation, $delivery) = @_;
    my $properties = $delivery->{header};
    my $tag        = $delivery->{deliver}->method_frame->delivery_tag;
    my $reply_to   = $properties->reply_to;
    my $ack        = sub { $channel->ack(delivery_tag => $tag) if $channel->is_open };

    my $trace_headers = {};    # set below, once the job has continued the request's trace
    my $answer = sub {
        my ($type, $data, %confirm) = @_;
        # After a reconnection the job's channel is gone: a quick job's request comes
        # again; a long one's lease runs out (worker_lost).
        return unless defined $reply_to && length $reply_to && $channel->is_open;
        $channel->publish(
            exchange    => '',
            routing_key => $reply_to,
            body        => $JSON->encode($data),
            header      => {
                content_type   => 'application/json',
                correlation_id => $properties->correlation_id,
                type           => $type,
                delivery_mode  => 2,
                # Our broker user, which RabbitMQ checks: a gateway run with
                # --worker-users takes answers only from its operation's workers.
                user_id        => $self->{broker}{user},
                # The request's trace, continued (Job.pm): the same trace id, our span.
                headers        => $trace_headers,
            },
            %confirm,
        );
    };
    my $job = Gateway::Worker::Job->new(
        id      => $properties->correlation_id // '',
        op      => $operation->{op},
        headers => $properties->headers // {},
        answer  => $answer,
    );
    $trace_headers = $job->trace_headers;    # not $job itself: no job <-> answer cycle
    if ($self->{cancelled}{ $job->id } || (defined $job->deadline && $job->deadline < AnyEvent->time)) {
        return $ack->();    # cancelled or expired already: the gateway has said so
    }
    if ($operation->{long_running}) {
        # From here on the lease, not the unacked request, guards the job: RabbitMQ's
        # consumer timeout never fires, however long it runs.
        $job->started;
        $ack->();
    }

    $self->_run($operation, $job, $delivery->{body} ? $delivery->{body}->payload : '', sub {
        my ($type, $data) = @_;
        if (!defined $type) {    # cancelled or expired: nothing to say
            $ack->() unless $operation->{long_running};
        }
        elsif ($operation->{long_running}) {
            $answer->($type, $data, on_ack => sub {}, on_nack => sub {
                $self->{log}->("the answer to job @{[ $job->id ]} was refused");
            });
        }
        elsif (!defined $reply_to || !length $reply_to) {
            $ack->();
        }
        else {
            # Only with the answer confirmed by RabbitMQ is the request done with; if the
            # broker refuses it, requeue the request so that it is answered again.
            $answer->($type, $data,
                on_ack  => $ack,
                on_nack => sub {
                    $self->{log}->("the answer to job @{[ $job->id ]} was refused; requeueing the request");
                    $channel->reject(delivery_tag => $tag, requeue => 1) if $channel->is_open;
                },
            );
        }
    });
}

# Run the handler and call $done->($type, $data) with the answer once -- or $done->()
# if the job was cancelled or passed its deadline first. While a condvar the handler
# returned is pending, heartbeats keep the job's lease and the deadline bounds it.
sub _run {
    my ($self, $operation, $job, $payload, $done) = @_;
    my $request = eval { $JSON->decode($payload) };
    return $done->(error => Gateway::Worker::Failure->new(code => 'invalid_request', message => 'the request is not JSON')->body)
        if $@;

    my ($settled, %timers);
    my $id = $job->id;
    my $key = refaddr $job;
    my $settle = sub {
        return if $settled++;
        %timers = ();
        delete $job->{on_cancel};    # the job is over; and it breaks job -> callback -> job
        delete $self->{running}{$id}{$key};
        delete $self->{running}{$id} unless %{ $self->{running}{$id} };
        $done->(@_);
    };
    $self->{running}{$id}{$key} = $job;
    $job->on_cancel(sub { $settle->() });
    my $lease = $job->lease_seconds // $DEFAULT_LEASE_SECONDS;
    $timers{heartbeat} = AnyEvent->timer(after => $lease / 3, interval => $lease / 3, cb => sub { $job->heartbeat });
    if (defined(my $deadline = $job->deadline)) {
        $timers{deadline} = AnyEvent->timer(after => _max($deadline - AnyEvent->time, 0), cb => sub {
            $self->{log}->("job $id passed its deadline; the gateway expires it" . _trace_note($job));
            $job->_cancel('expired');
        });
    }

    my $result = eval { $operation->{handler}->($request, $job) };
    if (my $error = $@) {
        return $settle->($self->_failure($operation, $job, $error));
    }
    if (blessed $result && $result->isa('AnyEvent::CondVar')) {
        $result->cb(sub {
            my $value = eval { $_[0]->recv };
            $settle->($@ ? $self->_failure($operation, $job, $@) : $self->_result($value));
        });
        return;
    }
    $settle->($self->_result($result));
}

sub _result {
    my ($self, $result) = @_;
    unless (eval { $JSON->encode($result); 1 }) {
        return error => { error => { code => 'worker_error', message => "the handler's result is not JSON: $@" } };
    }
    return result => $result;
}

sub _failure {
    my ($self, $operation, $job, $error) = @_;
    return error => $error->body if blessed $error && $error->isa('Gateway::Worker::Failure');
    (my $message = "$error") =~ s/\s+\z//;
    $self->{log}->("job @{[ $job->id ]} ($operation->{op}) failed: $message" . _trace_note($job));
    return error => { error => { code => 'worker_error', message => $message } };
}

# " (trace_id=...)" for a log line about a job that has a trace.
sub _trace_note {
    my ($job) = @_;
    my $trace_id = $job->trace_id;
    return defined $trace_id ? " (trace_id=$trace_id)" : '';
}

sub _close_reason {
    my ($frame) = @_;
    return 'no reason given' unless blessed $frame && $frame->can('method_frame');
    my $method = $frame->method_frame;
    return $method->can('reply_text') ? $method->reply_code . ' ' . $method->reply_text : ref $method;
}

sub _unescape {
    my ($text) = @_;
    $text =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
    utf8::decode($text);
    return $text;
}

sub _min { $_[0] < $_[1] ? $_[0] : $_[1] }
sub _max { $_[0] > $_[1] ? $_[0] : $_[1] }

1;

__END__

=head1 NAME

Gateway::Worker - serve operations of the AMQP HTTP gateway from Perl

=head1 SYNOPSIS

    use Gateway::Worker;

    my $worker = Gateway::Worker->new(broker_url => 'amqp://guest:guest@127.0.0.1:5673/');
    $worker->operation('text.upper' => sub {
        my ($request, $job) = @_;
        die Gateway::Worker::Failure->new(code => 'empty', message => 'no text')
            unless length $request->{text};
        return { text => uc $request->{text} };
    });
    $worker->run;    # until SIGINT or SIGTERM

=head1 DESCRIPTION

A worker for the gateway written with L<AnyEvent::RabbitMQ>, speaking only the gateway's
pinned AMQP wire protocol (see the gateway's README, "Workers"):

=over

=item * it consumes the durable queue named exactly like the operation, which the gateway
declares; the worker declares it passively and waits until it exists;

=item * the request body is JSON; C<correlation_id> is the job id, C<reply_to> the queue to
answer to;

=item * it answers on the default exchange with routing key C<reply_to>, the same
C<correlation_id>, a JSON body and the AMQP C<type> C<progress>, C<result> or C<error>;

=item * it acks the request only once RabbitMQ has confirmed the final answer (publisher
confirms), so a worker killed mid-job leaves the request to be redelivered -- except for
long-running operations, which follow the lease pattern (below);

=item * every answer carries the AMQP C<user_id> of the worker's broker user (RabbitMQ
refuses any other), so a gateway run with C<--worker-users> accepts it as coming from a
worker of that operation.

=back

A handler gets the request (decoded JSON) and a L<Gateway::Worker::Job>, and returns the
result (any Perl structure that encodes as JSON), or an L<AnyEvent> condvar that delivers
it later (C<< $cv->send($result) >>; C<< $cv->croak($failure) >> fails the job).
C<< $job->progress({...}) >> sends a progress event. To fail the job, C<die> with a
L<Gateway::Worker::Failure>: the error answer carries its code and message. Any other die
becomes an error answer with code C<worker_error>; a request that is not JSON is answered
with C<invalid_request>.

=head2 Not blocking the event loop

Handlers run in the worker's event loop. One that returns at once is fine; one that
works for long should return a condvar and do its work from AnyEvent watchers, so that
while it works the worker sends heartbeats, hears cancel notices and runs other jobs (up
to C<prefetch> of each operation at once). Blocking code (a CPU-bound loop, a
synchronous library) goes into a child process with C<fork_call> from L<AnyEvent::Util>
(part of AnyEvent):

    use AnyEvent::Util qw(fork_call);

    $worker->operation('report.generate' => sub {
        my ($request, $job) = @_;
        my $done = AnyEvent->condvar;
        fork_call { build_report($request) }    # in a child: may block
            sub { @_ ? $done->send($_[0]) : $done->croak($@) };
        return $done;
    }, long_running => 1);

=head2 Long jobs, cancels and deadlines

With C<< long_running => 1 >> the worker follows the gateway's lease pattern: it sends
C<started> and acks the request at once (so RabbitMQ's consumer timeout never fires,
however long the job runs), and the job's lease guards it: while the handler's condvar
is pending the worker sends a C<heartbeat> every third of the lease (header
C<x-lease-seconds>, default 120 s). If the worker dies, the gateway fails the job with
C<worker_lost> once the lease runs out. Without it (quick jobs) the request is acked only
after the answer is confirmed, so a worker killed mid-job leaves it to be redelivered.

The worker listens on the gateway's C<gateway.cancel> fanout exchange (declared
passively: it waits for a gateway to have declared it) with an exclusive queue of its
own. On a notice for a job it works on, C<< $job->cancelled >> becomes true, the
job's C<on_cancel> callbacks run, and the worker sends nothing more for it (a quick job's
request is acked). Requests of recently cancelled jobs are acked unrun. The same happens
when a running job passes its deadline (header C<x-deadline>); a request whose deadline
has passed before it arrives is acked without an answer (the gateway expires the job).

When the worker consumes, it prints C<serving OP[, OP...]> on STDOUT (flushed), again
after each reconnection. Logs go to STDERR.

=head1 METHODS

=head2 new(broker_url => $url, prefetch => 1, log => sub { ... })

C<broker_url> is C<amqp://user:password@host:port/vhost>; user, password and vhost are
URL-decoded, and an empty path means the vhost C</> (write C</%2F> explicitly too).
C<prefetch> is how many requests RabbitMQ hands the worker ahead of time (default 1).
C<log> receives log lines (default: STDERR).

=head2 operation($op => sub { my ($request, $job) = @_; ... }, %options)

Registers the handler of operation C<$op>. Returns the worker, so calls chain. Options:
C<< long_running => 1 >> (the lease pattern, above) and C<< prefetch => N >> (how many
of its requests RabbitMQ hands the worker ahead of time, so how many may run at once;
default the worker's C<prefetch>).

=head2 run

Connects, consumes every registered operation, and serves until SIGINT or SIGTERM; if the
broker connection is lost it reconnects, with a growing delay (up to 30 s).

=head2 parse_broker_url($url)

A function: C<< { host, port, user, pass, vhost } >> from an C<amqp://> URL.

=head1 SEE ALSO

L<Gateway::Worker::Failure>, L<Gateway::Worker::Job>, L<Gateway::Client>.

=cut
